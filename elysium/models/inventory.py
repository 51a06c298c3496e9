"""Stock per variant and the ledger of every movement."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from elysium.extensions import db
from elysium.models.types import UTCDateTime, enum_column, utcnow

if TYPE_CHECKING:
    from elysium.models.catalog import Product


class Inventory(db.Model):
    """Units of one variant (metal, or metal/diamond) of a product.

    ``reserved`` counts units held by checkouts in progress; what a shopper can buy is
    ``stock_level - reserved``. Both change only through the inventory service.
    A ``lead_time_weeks`` here overrides the product's for this variant.
    """

    __tablename__ = "inventory"
    __table_args__ = (
        UniqueConstraint("product_id", "variant_key"),
        CheckConstraint("stock_level >= 0", name="stock_level_not_negative"),
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("low_stock_threshold >= 0", name="low_stock_threshold"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    variant_key: Mapped[str] = mapped_column(String(100))
    stock_level: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    low_stock_threshold: Mapped[int] = mapped_column(Integer, default=2)
    lead_time_weeks: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    product: Mapped[Product] = relationship(back_populates="inventory")

    @property
    def available(self) -> int:
        return max(self.stock_level - self.reserved, 0)


class StockMovementKind(enum.StrEnum):
    RESERVE = "reserve"
    RELEASE = "release"
    COMMIT = "commit"
    RESTOCK = "restock"
    ADJUST = "adjust"


class StockReason(enum.StrEnum):
    """Why staff (or a cancelled order) changed the count, beyond the checkout's own moves."""

    RECEIVED = "received"
    CORRECTION = "correction"
    DAMAGED = "damaged"
    RETURNED = "returned"
    ORDER_CANCELLED = "order_cancelled"


class StockMovement(db.Model):
    """One entry of the stock ledger.

    ``idempotency_key`` is unique (e.g. ``order:42:reserve:7``), so the same operation
    run twice, by a retried webhook or a double click, is recorded, and applied, once.
    """

    __tablename__ = "stock_movements"

    id: Mapped[int] = mapped_column(primary_key=True)
    inventory_id: Mapped[int] = mapped_column(
        ForeignKey("inventory.id", ondelete="CASCADE"), index=True
    )
    order_id: Mapped[int | None] = mapped_column(
        ForeignKey("orders.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[StockMovementKind] = mapped_column(
        enum_column(StockMovementKind, "stock_movement_kind")
    )
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    stock_delta: Mapped[int] = mapped_column(Integer, default=0)
    reserved_delta: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[StockReason | None] = mapped_column(enum_column(StockReason, "stock_reason"))
    note: Mapped[str] = mapped_column(Text, default="")
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
