"""What the product page shows for a set of choices: the shop's page, the price fragment and
a refused add-to-cart all draw the configurator from the same context."""

from __future__ import annotations

from elysium.models.catalog import Product
from elysium.services.configuration import (
    RING_SIZES,
    Configuration,
    ConfigurationError,
    configure,
    price_breakdown,
)
from elysium.services.inventory import variant_availability

CONFIGURATION_FIELDS = ("metal", "diamond", "size", "engraving")


def configurator_context(
    product: Product, choices: dict[str, str], errors: dict[str, str] | None = None
) -> dict:
    """Everything the product page shows for these choices: price, availability, messages.

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
    return {
        "product": product,
        "choices": choices,
        "errors": errors,
        "breakdown": price_breakdown(product, configuration)
        if configuration and not errors
        else None,
        "availability": variant_availability(product, shown.variant_key),
        "ring_sizes": RING_SIZES,
    }
