"""What the product page shows for a set of choices: the shop's page, the price fragment and
a refused add-to-cart all draw the configurator from the same context."""

from __future__ import annotations

from typing import Any

from elysium.models.catalog import Product
from elysium.services.catalog import PieceNamed
from elysium.services.configuration import (
    ENGRAVING_ALLOWED,
    ENGRAVING_MAX_LENGTH,
    RING_SIZES,
    Configuration,
    ConfigurationError,
    configure,
    price_breakdown,
)
from elysium.services.inventory import ChoiceAvailability, choice_availability
from elysium.web.fragments import kept, product_to_show

CONFIGURATION_FIELDS = ("metal", "diamond", "size", "engraving")
PATTERN_SYNTAX = frozenset("^$\\.*+?()[]{}|/")


def exactly(text: str) -> str:
    """An HTML ``pattern`` matching only ``text``: the engraving field is :invalid once the
    shopper has changed it, which is how the page says "price out of date" without script."""
    return "".join(f"\\{char}" if char in PATTERN_SYNTAX else char for char in text)


def add_to_bag_state(stock: ChoiceAvailability, choices: dict[str, str]) -> str:
    """What "Add to bag" shows, in a word the page sends back with each price refresh: the
    refresh replaces the block only when this changes, so it never replaces the button while
    an add to bag is waiting behind it (htmx drops a request whose element was replaced)."""
    if stock.chosen.purchasable:
        return "available"
    size, engraving = choices.get("size") or "", choices.get("engraving") or ""
    return f"sold-out|{stock.chosen.variant}|{size}|{engraving}"


def configurator_context(
    product: Product, choices: dict[str, str], errors: dict[str, str] | None = None
) -> dict:
    """Everything the product page shows for these choices: price, availability (of the
    chosen piece and of each metal and diamond, with what can be had instead), messages.

    ``errors`` adds messages found elsewhere (the cart asks for a ring size). With an invalid
    choice there is no price, but the valid choices still say what's in stock.
    """
    errors = dict(errors or {})
    configuration: Configuration | None = None
    try:
        configuration = configure(product, choices)
    except ConfigurationError as error:
        errors = {**error.errors, **errors}
    try:
        shown = configure(
            product, {name: value for name, value in choices.items() if name not in errors}
        )
    except ConfigurationError:
        shown = configure(product, {})
    stock = choice_availability(product, shown.metal, shown.diamond)
    return {
        "product": product,
        "choices": choices,
        "errors": errors,
        "breakdown": price_breakdown(product, configuration)
        if configuration and not errors
        else None,
        "availability": stock.chosen,
        "stock": stock,
        "add_to_bag_state": add_to_bag_state(stock, choices),
        # The configuration's identity, for the product page's heart (None if invalid).
        "configuration_hash": configuration.hash if configuration else None,
        "ring_sizes": RING_SIZES,
        "engraving_allowed": ENGRAVING_ALLOWED,
        "engraving_max_length": ENGRAVING_MAX_LENGTH,
        "engraving_pattern": exactly(choices.get("engraving") or ""),
    }


def worth_keeping(context: dict) -> bool:
    """Whether what a :func:`configurator_context` shows may be kept for everyone (a page's
    blocks, the price panel): choices the catalogue offers, no engraving. Anything else (a
    made-up choice, an engraving: any text at all) is drawn for its request alone, so a stream
    of made-up values never fills the shared cache nor pushes out what shoppers ask for. A
    choice with spaces around it counts as made up: the piece reads it without them, but
    what is kept is filed under the choices as sent."""
    choices = context["choices"]
    return (
        not context["errors"]
        and not choices.get("engraving")
        and all(value == value.strip() for value in choices.values())
    )


class PieceOnPage:
    """The piece a product page shows: what :class:`PieceNamed` holds is at hand, with the
    hash of the configuration shown (for a signed-in shopper's heart, ``configuration_hashes``),
    and the first time a template asks for anything else (a kept block drawn again) the piece
    itself is read (``product_to_show``, under the same catalogue version)."""

    def __init__(
        self, named: PieceNamed, configuration_hashes: dict, piece: Product | None = None
    ) -> None:
        self.__dict__.update(named.__dict__)
        self.__dict__["configuration_hashes"] = configuration_hashes
        self.__dict__["_piece"] = piece

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        piece = self.__dict__["_piece"]
        if piece is None:
            piece = self.__dict__["_piece"] = product_to_show(self.__dict__["slug"])
        return getattr(piece, name)


def product_page_context(slug: str, choices: dict[str, str]) -> dict | None:
    """The product page's context for these choices (:func:`configurator_context`), kept per
    catalogue version with the piece's words (:class:`PieceNamed`). A page whose blocks are
    kept drawn (``kept_markup``) then reads no piece at all, nor works out its stock and price
    again; None for a piece that is not on sale. Only choices :func:`worth_keeping` are kept
    (``keep_blocks`` tells the page's blocks)."""
    read: list[Product] = []

    def make() -> tuple[PieceNamed, str | None, dict] | None:
        found = product_to_show(slug)
        if found is None:
            return None
        read.append(found)
        context = configurator_context(found, choices)
        del context["product"]
        configuration_hash = context.pop("configuration_hash")
        named = PieceNamed(
            found.id,
            found.slug,
            found.name,
            found.seo_title,
            found.seo_description,
            found.description,
        )
        return named, configuration_hash, context

    chosen = tuple(choices.items())
    shown = kept("product-page", (slug, chosen), make, keep=lambda made: worth_keeping(made[2]))
    if shown is None:
        return None
    named, configuration_hash, context = shown
    piece = PieceOnPage(named, {chosen: configuration_hash}, read[0] if read else None)
    return {**context, "product": piece, "keep_blocks": worth_keeping(context)}
