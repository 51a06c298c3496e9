"""The catalogue: collections, products and their configurable options."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from elysium.extensions import db
from elysium.models.types import UTCDateTime, enum_column, utcnow

if TYPE_CHECKING:
    from elysium.models.inventory import Inventory


class Category(enum.StrEnum):
    RING = "ring"
    NECKLACE = "necklace"
    EARRINGS = "earrings"
    BRACELET = "bracelet"

    @property
    def plural(self) -> str:
        return {"ring": "Rings", "necklace": "Necklaces", "earrings": "Earrings"}.get(
            self.value, "Bracelets"
        )


class OptionKind(enum.StrEnum):
    METAL = "metal"
    DIAMOND = "diamond"


class Collection(db.Model):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    tagline: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)
    artwork: Mapped[str | None] = mapped_column(String(200))
    # The hero image from the content source (Sanity's CDN): {"url": ..., "alt": ...}; it is
    # shown instead of ``artwork`` when set.
    image: Mapped[dict[str, str] | None] = mapped_column(JSON)
    published: Mapped[bool] = mapped_column(Boolean, default=True)
    seo_title: Mapped[str | None] = mapped_column(String(200))
    seo_description: Mapped[str | None] = mapped_column(String(320))
    external_id: Mapped[str | None] = mapped_column(String(120), unique=True)
    # The content source's last edit of the document written here (Sanity's ``_updatedAt``):
    # an older copy of it arriving later (a sync's page, a slow answer) is not written. Its
    # revision (``_rev``): a second edit stamped within the same second is told apart by it.
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_revision: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    products: Mapped[list[Product]] = relationship(back_populates="collection")


class Product(db.Model):
    """A piece in the catalogue.

    ``base_price`` is the price in the first metal and first diamond option; every option
    carries a non-negative ``price_delta`` on top, so ``base_price`` is the "from" price.
    Engraving is offered when ``engraving_fee`` is set; ring sizes when the piece is a ring.
    When ``lead_time_weeks`` is set, a variant with no stock can still be made to order.
    """

    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("base_price >= 0", name="base_price_not_negative"),
        CheckConstraint("engraving_fee IS NULL OR engraving_fee >= 0", name="engraving_fee"),
        CheckConstraint("lead_time_weeks IS NULL OR lead_time_weeks > 0", name="lead_time"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    name: Mapped[str] = mapped_column(String(160))
    category: Mapped[Category] = mapped_column(enum_column(Category, "category"), index=True)
    collection_id: Mapped[int | None] = mapped_column(
        ForeignKey("collections.id", ondelete="SET NULL"), index=True
    )
    description: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Images from the content source (Sanity's CDN): [{"url": ..., "alt": ...}], in order.
    images: Mapped[list[dict[str, str]]] = mapped_column(
        JSON, default=list, server_default=text("'[]'")
    )
    base_price: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    engraving_fee: Mapped[int | None] = mapped_column(Integer)
    lead_time_weeks: Mapped[int | None] = mapped_column(Integer)
    featured_rank: Mapped[int | None] = mapped_column(Integer)
    published: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    artwork: Mapped[str | None] = mapped_column(String(200))
    seo_title: Mapped[str | None] = mapped_column(String(200))
    seo_description: Mapped[str | None] = mapped_column(String(320))
    external_id: Mapped[str | None] = mapped_column(String(120), unique=True)
    # The content source's last edit of the document written here (Sanity's ``_updatedAt``):
    # an older copy of it arriving later (a sync's page, a slow answer) is not written. Its
    # revision (``_rev``): a second edit stamped within the same second is told apart by it.
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_revision: Mapped[str | None] = mapped_column(String(64))
    released_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    collection: Mapped[Collection | None] = relationship(back_populates="products")
    options: Mapped[list[ProductOption]] = relationship(
        back_populates="product",
        order_by="ProductOption.position",
        cascade="all, delete-orphan",
    )
    inventory: Mapped[list[Inventory]] = relationship(
        back_populates="product", cascade="all, delete-orphan"
    )

    @property
    def first_image_url(self) -> str | None:
        """The address of the piece's first image from the content source, if it has one."""
        return next((image["url"] for image in self.images or [] if image.get("url")), None)

    @property
    def has_ring_size(self) -> bool:
        return self.category is Category.RING

    @property
    def offers_engraving(self) -> bool:
        return self.engraving_fee is not None

    def options_of(self, kind: OptionKind) -> list[ProductOption]:
        return [option for option in self.options if option.kind is kind]

    @property
    def metals(self) -> list[ProductOption]:
        return self.options_of(OptionKind.METAL)

    @property
    def diamonds(self) -> list[ProductOption]:
        return self.options_of(OptionKind.DIAMOND)


class ProductOption(db.Model):
    """One choice for a stock-bearing option (a metal or a diamond) and its price delta."""

    __tablename__ = "product_options"
    __table_args__ = (
        UniqueConstraint("product_id", "kind", "code"),
        CheckConstraint("price_delta >= 0", name="price_delta_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    kind: Mapped[OptionKind] = mapped_column(enum_column(OptionKind, "option_kind"))
    code: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(120))
    price_delta: Mapped[int] = mapped_column(Integer, default=0)
    position: Mapped[int] = mapped_column(Integer, default=0)

    product: Mapped[Product] = relationship(back_populates="options")


class CatalogChange(db.Model):
    """A change Sanity announced (its webhook) that is not applied yet.

    The webhook writes the row before it answers, so an announced change is never lost: it is
    applied straight after the response, and if Sanity can't be read then, the row waits with
    a back-off for ``flask catalog apply-changes``. A newer announcement of the same document
    bumps ``version``; a row is removed only if its version is still the one that was applied.
    """

    __tablename__ = "catalog_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[str] = mapped_column(String(120), unique=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class CatalogVersion(db.Model):
    """One row whose ``token`` is renewed whenever the catalogue changes: database triggers
    on products, their options, their stock and collections give it a new random value as
    the transaction that changed any of them commits, whoever wrote it (migration 0008),
    but not for a reservation that leaves a variant "In stock" before and after (0009).
    Fragments of catalogue pages kept in the cache are filed under it, so a change is never
    shown late (``elysium.web.fragments``)."""

    __tablename__ = "catalog_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(32))
