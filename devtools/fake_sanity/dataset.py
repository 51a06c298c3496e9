"""The demo catalogue (``elysium/data/demo_catalogue.json``) as Sanity documents.

Each document has the shape the shop's GROQ projection returns (see
``elysium/integrations/sanity.py``): ids ``collection-<slug>`` and ``product-<slug>``, images
on a cdn.sanity.io-looking address (the shop decides what to show for them).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CATALOGUE = Path(__file__).resolve().parents[2] / "elysium" / "data" / "demo_catalogue.json"
PROJECT_ID = "elysium0"
DATASET = "production"


# When the demo's documents were last edited, as Sanity stamps every document (``_updatedAt``).
DEMO_EDITED_AT = "2026-11-01T09:00:00Z"


def updated_now() -> str:
    """Now, as Sanity writes ``_updatedAt``: UTC, ISO 8601 with a ``Z``, to the second (two
    edits within one second have the same stamp, and differ in ``_rev``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def revision(doc: dict[str, Any]) -> str:
    """A ``_rev`` that changes whenever the document does."""
    body = json.dumps({k: v for k, v in doc.items() if k != "_rev"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:22]


def image(project_id: str, dataset: str, slug: str, alt: str) -> dict[str, str]:
    asset = hashlib.sha256(slug.encode()).hexdigest()[:40]
    return {
        "url": f"https://cdn.sanity.io/images/{project_id}/{dataset}/{asset}-1600x1600.jpg",
        "alt": alt,
    }


def _seo(item: dict[str, Any]) -> dict[str, str | None] | None:
    if not item.get("seo_title") and not item.get("seo_description"):
        return None
    return {"title": item.get("seo_title"), "description": item.get("seo_description")}


def collection_document(item: dict[str, Any]) -> dict[str, Any]:
    doc = {
        "_id": f"collection-{item['slug']}",
        "_type": "collection",
        "title": item["name"],
        "slug": item["slug"],
        "tagline": item.get("tagline", ""),
        "description": item.get("description", ""),
        "position": item.get("position", 0),
        "seo": _seo(item),
    }
    doc["_updatedAt"] = DEMO_EDITED_AT
    doc["_rev"] = revision(doc)
    return doc


def product_document(
    item: dict[str, Any], currency: str, project_id: str = PROJECT_ID, dataset: str = DATASET
) -> dict[str, Any]:
    def options(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"code": o["code"], "label": o["label"], "priceDelta": o["delta"]} for o in rows]

    doc = {
        "_id": f"product-{item['slug']}",
        "_type": "product",
        "title": item["name"],
        "slug": item["slug"],
        "published": True,
        "category": item["category"],
        "collection": item.get("collection"),
        "description": item.get("description", ""),
        "details": list(item.get("details", [])),
        "basePrice": item["base_price"],
        "currency": currency,
        "engravingFee": item.get("engraving_fee"),
        "leadTimeWeeks": item.get("lead_time_weeks"),
        "featuredRank": item.get("featured"),
        "releasedAt": item.get("released"),
        "metals": options(item.get("metals", [])),
        "diamonds": options(item.get("diamonds", [])),
        "images": [image(project_id, dataset, item["slug"], item["name"])],
        "seo": _seo(item),
    }
    doc["_updatedAt"] = DEMO_EDITED_AT
    doc["_rev"] = revision(doc)
    return doc


def demo_documents(
    project_id: str = PROJECT_ID, dataset: str = DATASET, path: Path = CATALOGUE
) -> list[dict[str, Any]]:
    """Every collection and product of the demo catalogue, as published documents."""
    data = json.loads(path.read_text())
    currency = data.get("currency", "GBP")
    docs = [collection_document(c) for c in data["collections"]]
    docs += [product_document(p, currency, project_id, dataset) for p in data["products"]]
    return docs
