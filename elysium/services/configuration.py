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
ENGRAVING_PUNCTUATION = frozenset(" .,'&-")
ENGRAVING_RULE = "Use letters, numbers, spaces and . , ' & - only."


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


def engraving_problem(text: str) -> str | None:
    """Why this (already NFC-normalised) engraving cannot be cut, or None if it can."""
    if len(text) > ENGRAVING_MAX_LENGTH:
        return (
            f"Engravings can be at most {ENGRAVING_MAX_LENGTH} characters "
            f"(this one has {len(text)})."
        )
    for char in text:
        category = unicodedata.category(char)
        if category[0] == "C" or category in {"Zl", "Zp"} or (category == "Zs" and char != " "):
            return "Remove the invisible or control characters from the engraving."
        if not (category[0] == "L" or category == "Nd" or char in ENGRAVING_PUNCTUATION):
            return f"“{char}” can't be engraved. {ENGRAVING_RULE}"
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
    engraving = unicodedata.normalize(
        "NFC", raw_engraving if isinstance(raw_engraving, str) else ""
    )
    engraving = engraving.strip(" ") or None
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


def summary(product: Product, configuration: Configuration) -> str:
    """A one-line description for bags, orders and emails."""
    parts = [variant_label(product, configuration.variant_key)]
    if configuration.size:
        parts.append(f"US size {configuration.size}")
    if configuration.engraving:
        parts.append(f"engraved “{configuration.engraving}”")
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
