"""Page metadata and structured data for search engines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from elysium.models.catalog import Product
from elysium.money import decimal_string
from elysium.services.inventory import Availability
from elysium.urls import absolute_url
from elysium.web.artwork import product_picture

BRAND = "ELYSIUM"


def product_json_ld(
    product: Product,
    price: int,
    availability: Availability,
    configuration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """schema.org Product with an Offer and the picture for the configuration on show."""
    product_url = absolute_url("shop.product", slug=product.slug)
    data: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "Product",
        "name": product.name,
        "description": product.seo_description or product.description,
        "sku": product.slug,
        "brand": {"@type": "Brand", "name": BRAND},
        "category": product.category.plural,
        "url": product_url,
        "offers": {
            "@type": "Offer",
            "url": product_url,
            "price": decimal_string(price),
            "priceCurrency": product.currency,
            "availability": availability.schema_org,
            "itemCondition": "https://schema.org/NewCondition",
        },
    }
    if picture := product_picture(product, configuration):
        data["image"] = picture.absolute_src
    if product.metals:
        data["material"] = ", ".join(option.label for option in product.metals)
    return data
