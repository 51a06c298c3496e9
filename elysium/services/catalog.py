"""Reading the catalogue: the shop listing, product pages, collections."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import joinedload, selectinload

from elysium.models.catalog import Category, Collection, OptionKind, Product, ProductOption
from elysium.services.paging import Paged
from elysium.services.sql import AnySession

SEARCH_MAX_TERMS = 6
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,119}")
METAL_ORDER = {"yellow-gold": 0, "white-gold": 1, "rose-gold": 2, "platinum": 3}


class SortOrder(enum.StrEnum):
    FEATURED = "featured"
    PRICE_ASC = "price-asc"
    PRICE_DESC = "price-desc"
    NEWEST = "newest"

    @property
    def label(self) -> str:
        return {
            "featured": "Featured",
            "price-asc": "Price, low to high",
            "price-desc": "Price, high to low",
            "newest": "Newest",
        }[self.value]


@dataclass(frozen=True)
class ShopQuery:
    """A validated listing request. Prices are in minor units."""

    category: Category | None = None
    collection: str | None = None
    metal: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    q: str = ""
    sort: SortOrder = SortOrder.FEATURED
    page: int = 1


@dataclass
class ProductPage(Paged):
    products: Sequence[Product]
    total: int
    page: int
    per_page: int
    notes: list[str] = field(default_factory=list)


def _with_card_data(stmt: Select[tuple[Product]]) -> Select[tuple[Product]]:
    """Everything a product card shows, in a constant number of queries."""
    return stmt.options(
        joinedload(Product.collection),
        selectinload(Product.options),
        selectinload(Product.inventory),
    )


def published_products() -> Select[tuple[Product]]:
    return select(Product).where(Product.published.is_(True))


def _filtered(query: ShopQuery) -> Select[tuple[Product]]:
    stmt = published_products().outerjoin(Product.collection)
    if query.category is not None:
        stmt = stmt.where(Product.category == query.category)
    if query.collection:
        stmt = stmt.where(Collection.slug == query.collection)
    if query.metal:
        stmt = stmt.where(
            Product.options.any(
                and_(ProductOption.kind == OptionKind.METAL, ProductOption.code == query.metal)
            )
        )
    if query.min_price is not None:
        stmt = stmt.where(Product.base_price >= query.min_price)
    if query.max_price is not None:
        stmt = stmt.where(Product.base_price <= query.max_price)
    for term in query.q.split()[:SEARCH_MAX_TERMS]:
        stmt = stmt.where(
            or_(
                Product.name.icontains(term, autoescape=True),
                Product.description.icontains(term, autoescape=True),
                Collection.name.icontains(term, autoescape=True),
                Product.category == category_named(term),
            )
        )
    return stmt


def category_named(word: str) -> Category | None:
    """``"Rings"`` -> ``Category.RING``, so a search for a category finds its pieces."""
    word = word.lower()
    for category in Category:
        if word in {category.value, category.plural.lower(), category.value.rstrip("s")}:
            return category
    return None


def _ordered(stmt: Select[tuple[Product]], sort: SortOrder) -> Select[tuple[Product]]:
    if sort is SortOrder.PRICE_ASC:
        return stmt.order_by(Product.base_price.asc(), Product.name)
    if sort is SortOrder.PRICE_DESC:
        return stmt.order_by(Product.base_price.desc(), Product.name)
    if sort is SortOrder.NEWEST:
        return stmt.order_by(Product.released_at.desc(), Product.name)
    return stmt.order_by(
        Product.featured_rank.is_(None), Product.featured_rank, Product.released_at.desc()
    )


def search_products(session: AnySession, query: ShopQuery, per_page: int) -> ProductPage:
    """One page of the listing. A page past the end shows the last page, with a note."""
    filtered = _filtered(query)
    total = session.scalar(select(func.count()).select_from(filtered.subquery())) or 0
    pages = max((total + per_page - 1) // per_page, 1)
    notes = []
    page = query.page
    if page > pages:
        notes.append(f"There is no page {page}; here is page {pages}.")
        page = pages
    stmt = _with_card_data(_ordered(filtered, query.sort)).limit(per_page)
    products = session.scalars(stmt.offset((page - 1) * per_page)).unique().all()
    return ProductPage(products=products, total=total, page=page, per_page=per_page, notes=notes)


def featured_products(session: AnySession, limit: int = 6) -> Sequence[Product]:
    stmt = _with_card_data(
        published_products()
        .where(Product.featured_rank.is_not(None))
        .order_by(Product.featured_rank)
        .limit(limit)
    )
    return session.scalars(stmt).unique().all()


def collections(session: AnySession) -> Sequence[Collection]:
    stmt = (
        select(Collection)
        .where(Collection.published.is_(True))
        .order_by(Collection.position, Collection.name)
    )
    return session.scalars(stmt).all()


def collection_by_slug(session: AnySession, slug: str) -> Collection | None:
    if not SLUG.fullmatch(slug):
        return None
    stmt = select(Collection).where(Collection.slug == slug, Collection.published.is_(True))
    return session.scalar(stmt)


def collection_products(session: AnySession, collection: Collection) -> Sequence[Product]:
    stmt = _with_card_data(
        _ordered(
            published_products().where(Product.collection_id == collection.id), SortOrder.FEATURED
        )
    )
    return session.scalars(stmt).unique().all()


def product_by_slug(session: AnySession, slug: str) -> Product | None:
    if not SLUG.fullmatch(slug):
        return None
    stmt = _with_card_data(published_products().where(Product.slug == slug))
    return session.scalars(stmt).unique().one_or_none()


def metal_choices(session: AnySession) -> list[tuple[str, str]]:
    """Every metal offered anywhere in the published catalogue, as (code, label)."""
    stmt = (
        select(ProductOption.code, func.min(ProductOption.label))
        .join(ProductOption.product)
        .where(ProductOption.kind == OptionKind.METAL, Product.published.is_(True))
        .group_by(ProductOption.code)
    )
    choices = [(code, label) for code, label in session.execute(stmt)]
    return sorted(choices, key=lambda choice: (METAL_ORDER.get(choice[0], 99), choice[1]))


def sitemap_entries(session: AnySession) -> tuple[Sequence[Collection], Sequence[Product]]:
    products = session.scalars(published_products().order_by(Product.slug)).all()
    return collections(session), products
