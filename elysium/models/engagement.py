"""What shoppers look at, and the bespoke commissions they ask for."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from elysium.extensions import db
from elysium.models.types import ACTOR_MAX_LENGTH, UTCDateTime, enum_column, utcnow

if TYPE_CHECKING:
    from elysium.models.catalog import Product
    from elysium.models.users import User


class ProductView(db.Model):
    """A product page served to a visitor: the signed-in user, or the random id in a guest's
    cookie (never an address, a user agent or a query string)."""

    __tablename__ = "product_views"
    __table_args__ = (
        Index("ix_product_views_product_viewed", "product_id", "viewed_at"),
        Index("ix_product_views_user_viewed", "user_id", "viewed_at"),
        Index("ix_product_views_visitor_viewed", "visitor", "viewed_at"),
        Index("ix_product_views_viewed_at", "viewed_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(db.Integer, "sqlite"), primary_key=True
    )
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    visitor: Mapped[str | None] = mapped_column(String(64))
    viewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LeadStatus(enum.StrEnum):
    """Where a commission stands, first message to paid deposit (or not)."""

    NEW = "new"
    CONTACTED = "contacted"
    CONSULTATION = "consultation"
    QUOTED = "quoted"
    WON = "won"
    LOST = "lost"


class BespokeLead(db.Model):
    """A request for a bespoke piece (a commission), followed up by staff."""

    __tablename__ = "bespoke_leads"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str] = mapped_column(String(40), default="")
    category: Mapped[str] = mapped_column(String(40), default="")
    preferred_metal: Mapped[str] = mapped_column(String(40), default="")
    budget: Mapped[str] = mapped_column(String(80), default="")
    wanted_by: Mapped[date | None] = mapped_column(Date)
    message: Mapped[str] = mapped_column(Text)
    # "Start from this piece": the product and configuration the shopper came from, if any.
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"))
    configuration: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    contact_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[LeadStatus] = mapped_column(
        enum_column(LeadStatus, "lead_status"), default=LeadStatus.NEW, index=True
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    assigned_to_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The drawn form it was sent from (``services.bespoke.fill_token``): the same form sent
    # twice (a double click, the answer lost and sent again) is this one lead.
    form_nonce: Mapped[str | None] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    product: Mapped[Product | None] = relationship()
    assigned_to: Mapped[User | None] = relationship(foreign_keys=[assigned_to_id])
    events: Mapped[list[LeadEvent]] = relationship(
        back_populates="lead",
        cascade="all, delete-orphan",
        order_by="(LeadEvent.created_at, LeadEvent.id)",
    )
    quotes: Mapped[list[BespokeQuote]] = relationship(
        back_populates="lead", cascade="all, delete-orphan", order_by="BespokeQuote.id"
    )

    @property
    def reference(self) -> str:
        """How the commission is named to the shopper and on the deposit: "B01042"."""
        return f"B{self.id:05d}"


class LeadEvent(db.Model):
    """One line of a lead's timeline: a status change, a note, an assignment, a quote sent or
    a deposit paid, with who did it and when."""

    __tablename__ = "lead_events"
    # A staff note's form sent twice (a double click, its answer lost) is one note.
    __table_args__ = (UniqueConstraint("lead_id", "request_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(
        ForeignKey("bespoke_leads.id", ondelete="CASCADE"), index=True
    )
    from_status: Mapped[LeadStatus | None] = mapped_column(
        enum_column(LeadStatus, "lead_from_status")
    )
    to_status: Mapped[LeadStatus | None] = mapped_column(enum_column(LeadStatus, "lead_to_status"))
    actor: Mapped[str] = mapped_column(String(ACTOR_MAX_LENGTH))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    note: Mapped[str] = mapped_column(Text, default="")
    request_key: Mapped[str | None] = mapped_column(String(64))  # the note form's, if any
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    lead: Mapped[BespokeLead] = relationship(back_populates="events")

    @validates("actor")
    def _cut_actor(self, _key: str, actor: str) -> str:
        return actor[:ACTOR_MAX_LENGTH]


class BespokeQuote(db.Model):
    """A price for a commission, with the deposit that secures it (amounts in minor units,
    the deposit worked out by the server). A newer quote withdraws the older ones; only the
    current, unexpired one can be paid. Deposit orders point here (``orders.bespoke_quote_id``).
    """

    __tablename__ = "bespoke_quotes"
    __table_args__ = (
        CheckConstraint("price > 0", name="price_positive"),
        CheckConstraint("deposit_percent BETWEEN 1 AND 100", name="deposit_percent_range"),
        CheckConstraint("deposit_amount > 0", name="deposit_amount_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(
        ForeignKey("bespoke_leads.id", ondelete="CASCADE"), index=True
    )
    description: Mapped[str] = mapped_column(Text)
    price: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    deposit_percent: Mapped[int] = mapped_column(Integer)
    deposit_amount: Mapped[int] = mapped_column(BigInteger)
    valid_until: Mapped[date] = mapped_column(Date)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    lead: Mapped[BespokeLead] = relationship(back_populates="quotes")
