"""What shoppers look at, and the bespoke commissions they ask for."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from elysium.extensions import db
from elysium.models.types import UTCDateTime, enum_column, utcnow


class ProductView(db.Model):
    __tablename__ = "product_views"
    __table_args__ = (Index("ix_product_views_product_viewed", "product_id", "viewed_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(db.Integer, "sqlite"), primary_key=True
    )
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    visitor: Mapped[str | None] = mapped_column(String(64))
    viewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LeadStatus(enum.StrEnum):
    NEW = "new"
    CONTACTED = "contacted"
    DESIGNING = "designing"
    QUOTED = "quoted"
    WON = "won"
    CLOSED = "closed"


class BespokeLead(db.Model):
    """A request for a bespoke piece, followed up by staff."""

    __tablename__ = "bespoke_leads"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str] = mapped_column(String(40), default="")
    category: Mapped[str] = mapped_column(String(40), default="")
    budget: Mapped[str] = mapped_column(String(80), default="")
    preferred_metal: Mapped[str] = mapped_column(String(40), default="")
    occasion_date: Mapped[str] = mapped_column(String(40), default="")
    message: Mapped[str] = mapped_column(Text)
    marketing_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[LeadStatus] = mapped_column(
        enum_column(LeadStatus, "lead_status"), default=LeadStatus.NEW, index=True
    )
    staff_notes: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    assigned_to_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
