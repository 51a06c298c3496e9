"""How a piece may be configured, what a configuration costs, and its canonical form.

The product page, the price endpoint, the bag and the wishlist all validate and price
through :func:`configure` and :func:`price_breakdown`, so a price sent by a client is never
used, and a configuration accepted in one place is accepted everywhere.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from elysium.models.catalog import OptionKind, Product, ProductOption
from elysium.services.errors import InvalidInputError

RING_SIZES: tuple[str, ...] = tuple(f"{half / 2:g}" for half in range(6, 27))
ENGRAVING_MAX_LENGTH = 25
# Accents typed as combining marks, on one letter (Vietnamese stacks two).
ENGRAVING_MAX_MARKS = 2
# The most code points an engraving within the limits could be typed as, every accent
# decomposed: anything longer is too long, whatever it composes to.
ENGRAVING_TYPED_MAX = 8 * ENGRAVING_MAX_LENGTH * (ENGRAVING_MAX_MARKS + 1)
# U+2019 is the apostrophe a phone types for '.
ENGRAVING_PUNCTUATION = frozenset(" .,'\u2019-&")
# The symbols the workshop cuts. ♥ and ✝ are also emoji, but only in their emoji form (with the
# variation selector U+FE0F) do they become pictures, and that form is refused.
ENGRAVING_SYMBOLS = frozenset("♥∞★✝")
ENGRAVING_ALLOWED = "letters (accents too), numbers, spaces and . , ' \u2019 - & ♥ ∞ ★ ✝"
ENGRAVING_RULE = f"Use {ENGRAVING_ALLOWED} only."
_INVISIBLE_NAMES = {
    "\t": "a tab",
    "\n": "a line break",
    "\r": "a line break",
    "\u200b": "a zero-width space",
    "\u200c": "a zero-width non-joiner",
    "\u200d": "a zero-width joiner",
    "\u2060": "a word joiner",
    "\ufeff": "a zero-width no-break space",
    # Letters to Unicode that draw nothing: a blank engraving charged the fee.
    "\u115f": "a Hangul filler",
    "\u1160": "a Hangul filler",
    "\u3164": "a Hangul filler",
    "\uffa0": "a Hangul filler",
}
_BIDI = frozenset(
    [chr(code) for code in range(0x202A, 0x202F)]
    + [chr(code) for code in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c"]
)
_EMOJI_RANGES = (
    (0x2190, 0x21FF),  # arrows
    (0x2300, 0x23FF),  # technical: watch, hourglass...
    (0x25A0, 0x27BF),  # shapes, miscellaneous symbols, dingbats
    (0x2B00, 0x2BFF),  # more arrows and stars
    (0xFE00, 0xFE0F),  # variation selectors: U+FE0F asks for the picture form
    (0x1F000, 0x1FAFF),  # pictographs, faces, flags
    (0xE0020, 0xE007F),  # tag characters (subdivision flags)
)


class ConfigurationError(InvalidInputError):
    """One or more choices are not valid for the piece."""


@dataclass(frozen=True)
class Configuration:
    metal: str
    diamond: str | None = None
    size: str | None = None
    engraving: str | None = None

    @property
    def variant_key(self) -> str:
        """The stock-bearing part: size and engraving are made to order and share stock."""
        return f"{self.metal}/{self.diamond}" if self.diamond else self.metal

    def canonical(self) -> dict[str, str]:
        return {name: value for name, value in self.__dict__.items() if value}

    @property
    def hash(self) -> str:
        payload = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    @classmethod
    def from_canonical(cls, data: dict[str, Any]) -> Configuration:
        return cls(
            metal=data["metal"],
            diamond=data.get("diamond"),
            size=data.get("size"),
            engraving=data.get("engraving"),
        )


@dataclass(frozen=True)
class PriceLine:
    label: str
    amount: int


@dataclass(frozen=True)
class PriceBreakdown:
    currency: str
    lines: list[PriceLine] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)


def _clean(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def engraving_length(text: str) -> int:
    """Characters as the shopper sees them: an accent typed as a combining mark (one NFC
    can't compose) sits on its letter and isn't counted again."""
    return sum(1 for char in text if not unicodedata.category(char).startswith("M"))


def _is_emoji(char: str) -> bool:
    code = ord(char)
    return code == 0x20E3 or any(low <= code <= high for low, high in _EMOJI_RANGES)


def _character_problem(char: str, previous: str, on_a_letter: bool) -> str | None:
    """Why ``char`` can't be cut; ``on_a_letter`` says a combining mark here would sit on one."""
    category = unicodedata.category(char)
    code = f"U+{ord(char):04X}"
    invisible = "Remove the invisible or control characters from the engraving: it has"
    if char in _BIDI:
        return f"{invisible} a text-direction mark ({code}), which can't be cut."
    if char in _INVISIBLE_NAMES:
        return f"{invisible} {_INVISIBLE_NAMES[char]} ({code}), which can't be cut."
    if char in ENGRAVING_SYMBOLS or char in ENGRAVING_PUNCTUATION:
        return None
    if 0xFE00 <= ord(char) <= 0xFE0F:
        return f"Emoji can't be engraved (“{previous}{char}”). {ENGRAVING_RULE}"
    if _is_emoji(char):
        return f"Emoji can't be engraved (“{char}”). {ENGRAVING_RULE}"
    if category == "Cc":
        return f"{invisible} a control character ({code}), which can't be cut."
    if category[0] in "CZ":
        name = unicodedata.name(char, "")
        what = f"a {name.lower()}" if name else "an unassigned or private character"
        return f"{invisible} {what} ({code}), which can't be cut."
    if category[0] == "L" or category == "Nd" or (category in {"Mn", "Mc"} and on_a_letter):
        return None
    return f"“{char}” can't be engraved. {ENGRAVING_RULE}"


def engraving_problem(text: str) -> str | None:
    """Why this (already NFC-normalised) engraving cannot be cut, or None if it can. One
    longer than any engraving could be typed as is refused by its length alone: its
    characters are not each looked at (a megabyte of them took seconds)."""
    if len(text) > ENGRAVING_TYPED_MAX:
        return (
            f"Engravings can be at most {ENGRAVING_MAX_LENGTH} characters "
            f"(this one has {len(text)})."
        )
    previous, on_a_letter, marks = "", False, 0
    for char in text:
        if problem := _character_problem(char, previous, on_a_letter):
            return problem
        category = unicodedata.category(char)
        marks = marks + 1 if category[0] == "M" else 0
        if marks > ENGRAVING_MAX_MARKS:
            # Marks aren't counted as characters: stacked without end, they got past the limit.
            return (
                f"A letter can carry at most {ENGRAVING_MAX_MARKS} accents in an engraving. "
                f"{ENGRAVING_RULE}"
            )
        on_a_letter = category[0] == "L" or (on_a_letter and category[0] == "M")
        previous = char
    length = engraving_length(text)
    if length > ENGRAVING_MAX_LENGTH:
        return (
            f"Engravings can be at most {ENGRAVING_MAX_LENGTH} characters (this one has {length})."
        )
    return None


def _choose(
    options: list[ProductOption], raw: str, name: str, errors: dict[str, str]
) -> ProductOption | None:
    if not options:
        if raw:
            errors[name] = f"This piece has no {name} choice."
        return None
    if not raw:
        return options[0]
    for option in options:
        if option.code == raw:
            return option
    errors[name] = f"Choose one of the {name}s offered for this piece."
    return None


def configure(
    product: Product, choices: dict[str, Any], *, require_size: bool = False
) -> Configuration:
    """Validate a shopper's choices for ``product``; missing metal/diamond take the first option.

    Raises :class:`ConfigurationError` with a message per field.
    """
    errors: dict[str, str] = {}
    metal = _choose(product.metals, _clean(choices.get("metal")), "metal", errors)
    diamond = _choose(product.diamonds, _clean(choices.get("diamond")), "diamond", errors)

    size = _clean(choices.get("size")) or None
    if size is not None:
        if not product.has_ring_size:
            errors["size"] = "This piece has no ring size."
        elif size not in RING_SIZES:
            errors["size"] = "Choose a US ring size from 3 to 13 (half sizes included)."
    elif require_size and product.has_ring_size:
        errors["size"] = "Choose your ring size."

    raw_engraving = choices.get("engraving")
    typed = raw_engraving if isinstance(raw_engraving, str) else ""
    # Composing takes time that grows with the square of a run of accents: what no engraving
    # could compose from is refused by its length before it is composed.
    engraving = None if len(typed) > ENGRAVING_TYPED_MAX else unicodedata.normalize("NFC", typed)
    engraving = (engraving.strip(" ") or None) if engraving is not None else typed
    if engraving is not None:
        if not product.offers_engraving:
            errors["engraving"] = "Engraving isn't offered on this piece."
        elif problem := engraving_problem(engraving):
            errors["engraving"] = problem

    if metal is None and "metal" not in errors:
        errors["metal"] = "This piece has no metal to choose."
    if errors:
        raise ConfigurationError(errors)
    assert metal is not None
    return Configuration(
        metal=metal.code,
        diamond=diamond.code if diamond else None,
        size=size,
        engraving=engraving,
    )


def option_label(product: Product, kind: OptionKind, code: str | None) -> str | None:
    for option in product.options_of(kind):
        if option.code == code:
            return option.label
    return None


def variant_label(product: Product, variant_key: str) -> str:
    """``platinum/1.00ct`` -> ``Platinum with 1.00 ct, F colour, VVS2``."""
    metal_code, _, diamond_code = variant_key.partition("/")
    metal = option_label(product, OptionKind.METAL, metal_code) or metal_code
    diamond = option_label(product, OptionKind.DIAMOND, diamond_code) if diamond_code else None
    return f"{metal} with {diamond}" if diamond else metal


def engraved(text: str) -> str:
    """How a summary says what a piece is engraved with."""
    return f"engraved “{text}”"


def summary(product: Product, configuration: Configuration) -> str:
    """A one-line description for bags, orders and emails."""
    parts = [variant_label(product, configuration.variant_key)]
    if configuration.size:
        parts.append(f"US size {configuration.size}")
    if configuration.engraving:
        parts.append(engraved(configuration.engraving))
    return ", ".join(parts)


def price_breakdown(product: Product, configuration: Configuration) -> PriceBreakdown:
    """Base price plus each chosen option's delta and the engraving fee: the only pricing rule."""
    lines = [PriceLine(product.name, product.base_price)]
    for kind, code in (
        (OptionKind.METAL, configuration.metal),
        (OptionKind.DIAMOND, configuration.diamond),
    ):
        for option in product.options_of(kind):
            if option.code == code:
                lines.append(PriceLine(option.label, option.price_delta))
    if configuration.engraving and product.engraving_fee is not None:
        lines.append(PriceLine("Engraving", product.engraving_fee))
    return PriceBreakdown(currency=product.currency, lines=lines)
