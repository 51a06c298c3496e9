"""Stock: what can be bought now, and (later) the atomic operations that change it.

Every page that shows availability (product page, listing, bag) reads it here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from elysium.models.catalog import Product
from elysium.services.configuration import variant_label


class StockStatus(enum.StrEnum):
    IN_STOCK = "in_stock"
    LOW = "low"
    MADE_TO_ORDER = "made_to_order"
    SOLD_OUT = "sold_out"


SCHEMA_ORG_AVAILABILITY = {
    StockStatus.IN_STOCK: "https://schema.org/InStock",
    StockStatus.LOW: "https://schema.org/LimitedAvailability",
    StockStatus.MADE_TO_ORDER: "https://schema.org/MadeToOrder",
    StockStatus.SOLD_OUT: "https://schema.org/OutOfStock",
}


@dataclass(frozen=True)
class Availability:
    status: StockStatus
    available: int
    lead_time_weeks: int | None
    variant: str

    @property
    def purchasable(self) -> bool:
        return self.status is not StockStatus.SOLD_OUT

    @property
    def schema_org(self) -> str:
        return SCHEMA_ORG_AVAILABILITY[self.status]

    @property
    def message(self) -> str:
        if self.status is StockStatus.IN_STOCK:
            return "In stock"
        if self.status is StockStatus.LOW:
            return f"Only {self.available} left"
        if self.status is StockStatus.MADE_TO_ORDER:
            return f"Made to order — ships in about {self.lead_time_weeks} weeks"
        return f"Sold out in {self.variant[0].lower()}{self.variant[1:]}"


def variant_availability(product: Product, variant_key: str) -> Availability:
    """Availability of one variant, from ``product.inventory`` (eager-load it on lists)."""
    row = next((row for row in product.inventory if row.variant_key == variant_key), None)
    available = row.available if row else 0
    threshold = row.low_stock_threshold if row else 0
    lead_time = (row.lead_time_weeks if row else None) or product.lead_time_weeks
    label = variant_label(product, variant_key)
    if available > 0:
        status = StockStatus.LOW if available <= threshold else StockStatus.IN_STOCK
        return Availability(status, available, lead_time, label)
    if lead_time:
        return Availability(StockStatus.MADE_TO_ORDER, 0, lead_time, label)
    return Availability(StockStatus.SOLD_OUT, 0, None, label)


def product_availability(product: Product) -> StockStatus:
    """The best any variant offers: what a listing card shows for the whole piece."""
    if any(row.available > 0 for row in product.inventory):
        return StockStatus.IN_STOCK
    if product.lead_time_weeks or any(row.lead_time_weeks for row in product.inventory):
        return StockStatus.MADE_TO_ORDER
    return StockStatus.SOLD_OUT
