"""Page metadata and structured data for search engines."""

from __future__ import annotations

from typing import Any

from elysium.models.catalog import Product
from elysium.money import decimal_string
from elysium.services.inventory import Availability
from elysium.urls import absolute_url

BRAND = "ELYSIUM"


def product_json_ld(product: Product, price: int, availability: Availability) -> dict[str, Any]:
    """schema.org Product with an Offer for the configuration on show."""
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
    if product.artwork:
        data["image"] = absolute_url("static", filename=f"img/{product.artwork}")
    if product.metals:
        data["material"] = ", ".join(option.label for option in product.metals)
    return data
