"""Orders, their lines (snapshots) and their timeline; Stripe events already processed."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from elysium.extensions import db
from elysium.models.types import ACTOR_MAX_LENGTH, UTCDateTime, enum_column, utcnow


class OrderStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    PAYMENT_FAILED = "payment_failed"
    PAID = "paid"
    FULFILLED = "fulfilled"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class Order(db.Model):
    """An order. Addresses are snapshots (JSON), so editing an address book changes nothing here."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total >= 0", name="total_not_negative"),
        CheckConstraint("refunded_amount >= 0", name="refunded_not_negative"),
        CheckConstraint("charged_back_amount >= 0", name="charged_back_not_negative"),
        CheckConstraint("disputes_lost_amount >= 0", name="disputes_lost_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    cart_id: Mapped[int | None] = mapped_column(ForeignKey("carts.id", ondelete="SET NULL"))
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[OrderStatus] = mapped_column(
        enum_column(OrderStatus, "order_status"), default=OrderStatus.PENDING, index=True
    )
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int] = mapped_column(BigInteger)
    shipping: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int] = mapped_column(BigInteger)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    # The part of ``refunded_amount`` the cardholder's bank took back (a dispute lost), not
    # the shop: the shopper is told it came from their bank, never that the shop refunded it.
    charged_back_amount: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # What the banks took back in disputes lost, as they said, uncapped: a refund counted when
    # a dispute was lost leaves less of it in ``charged_back_amount``, and should that refund
    # fail after all, the bank's part grows back to this.
    disputes_lost_amount: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Stripe's latest report of what it has refunded (``charge.refunded``): its running total
    # and when Stripe made it. A refund's failure delivered after a report made later is
    # already left out of that report's total.
    refunds_reported: Mapped[int | None] = mapped_column(BigInteger)
    refunds_reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gift_message: Mapped[str] = mapped_column(Text, default="")
    shipping_address: Mapped[dict[str, Any]] = mapped_column(JSON)
    billing_address: Mapped[dict[str, Any]] = mapped_column(JSON)
    stripe_checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    checkout_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # A deposit on a bespoke commission: the order of one line that pays this quote.
    bespoke_quote_id: Mapped[int | None] = mapped_column(
        ForeignKey("bespoke_quotes.id", ondelete="SET NULL"), index=True
    )
    needs_attention: Mapped[bool] = mapped_column(Boolean, default=False)
    attention_reason: Mapped[str] = mapped_column(Text, default="")
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When money came for an order that had already ended unpaid (cancelled, or its bank
    # payment failed): it stays ended, flagged for staff, but the shopper's money was taken.
    late_payment_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    carrier: Mapped[str | None] = mapped_column(String(40))
    tracking_number: Mapped[str | None] = mapped_column(String(100), index=True)
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="OrderLine.id"
    )
    events: Mapped[list[OrderEvent]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="OrderEvent.id"
    )
    refunds: Mapped[list[Refund]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="Refund.id"
    )


class OrderLine(db.Model):
    """What was bought, as it was: name, configuration and price are copied, not linked."""

    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price >= 0", name="unit_price_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"))
    inventory_id: Mapped[int | None] = mapped_column(
        ForeignKey("inventory.id", ondelete="SET NULL")
    )
    product_name: Mapped[str] = mapped_column(String(160))
    product_slug: Mapped[str] = mapped_column(String(120))
    variant_key: Mapped[str] = mapped_column(String(100))
    configuration: Mapped[dict[str, Any]] = mapped_column(JSON)
    configuration_summary: Mapped[str] = mapped_column(Text, default="")
    made_to_order: Mapped[bool] = mapped_column(Boolean, default=False)
    # The day a made-to-order piece was promised to ship by, as the checkout page said.
    ships_by: Mapped[date | None] = mapped_column(Date)
    # The piece's first image from the content source when it was bought, for a piece the
    # shop has no drawing of (drawings are redrawn from the configuration).
    image_url: Mapped[str | None] = mapped_column(String(500))
    unit_price: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(Integer)

    order: Mapped[Order] = relationship(back_populates="lines")

    @property
    def line_total(self) -> int:
        return self.unit_price * self.quantity


class OrderEvent(db.Model):
    """One entry on an order's timeline: a status change or a note, and who caused it.

    ``actor`` is how the entry names its author ("stripe", "shopper", "system", or a member of
    staff by name, kept as it was); ``actor_user_id`` links a staff member's entries to them.
    """

    __tablename__ = "order_events"
    # A staff note's form sent twice (a double click, its answer lost) is one note.
    __table_args__ = (UniqueConstraint("order_id", "request_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[OrderStatus | None] = mapped_column(enum_column(OrderStatus, "from_status"))
    to_status: Mapped[OrderStatus | None] = mapped_column(enum_column(OrderStatus, "to_status"))
    actor: Mapped[str] = mapped_column(String(ACTOR_MAX_LENGTH))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    note: Mapped[str] = mapped_column(Text, default="")
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    request_key: Mapped[str | None] = mapped_column(String(64))  # the note form's, if any
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    order: Mapped[Order] = relationship(back_populates="events")

    @validates("actor")
    def _cut_actor(self, _key: str, actor: str) -> str:
        return actor[:ACTOR_MAX_LENGTH]


class ProcessedPaymentEvent(db.Model):
    """A payment-provider event already applied; written in the same transaction as its effect."""

    __tablename__ = "processed_payment_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(40), default="stripe")
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    event_type: Mapped[str] = mapped_column(String(120))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # An event about a payment no order knows yet (its own report still on its way): kept,
    # with the event's object and when Stripe made it, until an order learns that payment
    # (``payments.apply_held_events``).
    held_for_payment: Mapped[str | None] = mapped_column(String(255), index=True)
    held_object: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    held_made_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RefundStatus(enum.StrEnum):
    PENDING = "pending"  # asked of Stripe; its answer (or the webhook) settles it
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Refund(db.Model):
    """Money given back through Stripe's Refunds API, as staff asked for it.

    ``idempotency_key`` is unique, so a repeated or concurrent request refunds once;
    ``restock`` lists the pieces put back on sale with it (``[{"inventory_id", "quantity"}]``);
    ``notify`` is whether the shopper is emailed once it succeeds, kept for a retry.
    ``failed_at``: when Stripe's ``refund.failed`` event was made, for one that failed after
    Stripe had accepted it (a refund made in Stripe's dashboard that failed is kept too,
    FAILED, under the key ``stripe:<its id>``).
    """

    __tablename__ = "refunds"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[RefundStatus] = mapped_column(
        enum_column(RefundStatus, "refund_status"), default=RefundStatus.PENDING
    )
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    failure_reason: Mapped[str] = mapped_column(Text, default="")
    restock: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    notify: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    order: Mapped[Order] = relationship(back_populates="refunds")
