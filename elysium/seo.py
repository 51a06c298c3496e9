"""Absolute URLs, page metadata and structured data for search engines."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app, has_request_context, request, url_for

from elysium.models.catalog import Product
from elysium.money import decimal_string
from elysium.services.inventory import Availability

BRAND = "ELYSIUM"


DEFAULT_SITE_URL = "http://127.0.0.1:5000"


def absolute_url(endpoint: str, **values: Any) -> str:
    """An absolute URL on ``SITE_URL`` when it is set (behind proxies), else on this host.

    Outside a request (a command, a worker) there is no "this host", so links in emails sent
    from there use ``SITE_URL``, which production must set.
    """
    site_url = current_app.config.get("SITE_URL")
    if has_request_context():
        if site_url:
            return site_url + url_for(endpoint, **values)
        return url_for(endpoint, _external=True, **values)
    base = urlsplit(site_url or DEFAULT_SITE_URL)
    adapter = current_app.url_map.bind(
        base.netloc, url_scheme=base.scheme, script_name=base.path or "/"
    )
    return adapter.build(endpoint, values, force_external=True)


def modify_query(**changes: Any) -> str:
    """The current URL's query string with some parameters changed (``None`` removes one)."""
    args = request.args.to_dict()
    for name, value in changes.items():
        if value is None or value == "":
            args.pop(name, None)
        else:
            args[name] = str(value)
    endpoint = request.endpoint or "shop.listing"
    return url_for(endpoint, **(request.view_args or {}), **args)


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
