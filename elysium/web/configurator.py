"""What the product page shows for a set of choices: the shop's page, the price fragment and
a refused add-to-cart all draw the configurator from the same context."""

from __future__ import annotations

from elysium.models.catalog import Product
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
        "ring_sizes": RING_SIZES,
        "engraving_allowed": ENGRAVING_ALLOWED,
        "engraving_max_length": ENGRAVING_MAX_LENGTH,
        "engraving_pattern": exactly(choices.get("engraving") or ""),
    }
