"""Reading the catalogue: the shop listing, product pages, collections."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Select, and_, bindparam, func, or_, select
from sqlalchemy.orm import joinedload, selectinload

from elysium.models.catalog import (
    CatalogVersion,
    Category,
    Collection,
    OptionKind,
    Product,
    ProductOption,
)
from elysium.models.inventory import Inventory
from elysium.services.inventory import StockStatus, availability_columns, availability_of
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


@dataclass(frozen=True)
class CardOption:
    """A metal or diamond as a card knows it: its code (the picture shows the first)."""

    code: str


@dataclass(frozen=True)
class ProductCard:
    """What a product card shows, and nothing more: the listing, the home page, a collection
    and "Trending now" read their cards in two queries (:func:`product_cards`), with the
    piece's stock worked out by the database, never as ORM objects with every column,
    option and inventory row. It answers what the card partial, ``product_picture`` and the
    wishlist heart ask of a product."""

    id: int
    slug: str
    name: str
    artwork: str | None
    images: list[dict[str, str]]
    base_price: int
    currency: str
    collection_name: str | None
    stock: StockStatus
    metals: tuple[CardOption, ...] = ()
    diamonds: tuple[CardOption, ...] = ()


@dataclass
class ProductPage(Paged):
    products: Sequence[ProductCard]
    total: int
    page: int
    per_page: int
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PieceNamed:
    """What a product page shows of its piece outside the blocks it keeps drawn (the title,
    the description, the canonical link, the heart, Add to bag, Recently viewed)."""

    id: int
    slug: str
    name: str
    seo_title: str | None
    seo_description: str | None
    description: str


CARD_COLUMNS = (
    Product.id,
    Product.slug,
    Product.name,
    Product.artwork,
    Product.images,
    Product.base_price,
    Product.currency,
    Collection.name.label("collection_name"),
    Product.lead_time_weeks,
    *availability_columns(),
)


def _as_cards(session: AnySession, stmt: Select) -> tuple[list[ProductCard], int | None]:
    """The cards a products query (``_filtered`` or ``published_products`` with the collection
    joined) finds, in its order, and its ``total`` column when it has one. One query for the
    pieces, one for the codes of their metals and diamonds."""
    rows = session.execute(stmt).all()
    total = rows[0].total if rows and "total" in rows[0]._fields else None
    codes: dict[tuple[int, OptionKind], list[CardOption]] = {}
    if rows:
        options = session.execute(
            select(ProductOption.product_id, ProductOption.kind, ProductOption.code)
            .where(ProductOption.product_id.in_([row.id for row in rows]))
            .order_by(ProductOption.position, ProductOption.id)
        )
        for product_id, kind, code in options:
            codes.setdefault((product_id, kind), []).append(CardOption(code))
    cards = [
        ProductCard(
            id=row.id,
            slug=row.slug,
            name=row.name,
            artwork=row.artwork,
            images=row.images or [],
            base_price=row.base_price,
            currency=row.currency,
            collection_name=row.collection_name,
            stock=availability_of(row.any_left, row.any_lead_time, row.lead_time_weeks),
            metals=tuple(codes.get((row.id, OptionKind.METAL), ())),
            diamonds=tuple(codes.get((row.id, OptionKind.DIAMOND), ())),
        )
        for row in rows
    ]
    return cards, total


def _card_query(stmt: Select[tuple[Product]]) -> Select:
    """``stmt`` (products, the collection outer-joined) selecting what a card shows."""
    return stmt.with_only_columns(*CARD_COLUMNS, maintain_column_froms=False)


def product_cards(session: AnySession, ids: Sequence[int]) -> list[ProductCard]:
    """The cards of these published pieces, in the order of ``ids`` (unpublished or
    missing ones left out)."""
    if not ids:
        return []
    stmt = published_products().outerjoin(Product.collection).where(Product.id.in_(ids))
    found = {card.id: card for card in _as_cards(session, _card_query(stmt))[0]}
    return [found[product_id] for product_id in ids if product_id in found]


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
    """One page of the listing. A page past the end shows the last page, with a note.

    The page's cards carry the number of pieces found (a window count), so a page costs
    two queries; only a page past the end counts first, then reads the last page."""
    filtered = _filtered(query)
    stmt = (
        _card_query(_ordered(filtered, query.sort))
        .add_columns(func.count().over().label("total"))
        .limit(per_page)
    )
    cards, total = _as_cards(session, stmt.offset((query.page - 1) * per_page))
    page, notes = query.page, []
    if total is None:
        total = 0 if page == 1 else _count(session, filtered)
        pages = max((total + per_page - 1) // per_page, 1)
        if page > pages:
            notes.append(f"There is no page {page}; here is page {pages}.")
            page = pages
            cards, _ = _as_cards(session, stmt.offset((page - 1) * per_page))
    return ProductPage(products=cards, total=total, page=page, per_page=per_page, notes=notes)


def _count(session: AnySession, filtered: Select[tuple[Product]]) -> int:
    counted = filtered.with_only_columns(func.count(Product.id), maintain_column_froms=False)
    return session.scalar(counted) or 0


def featured_products(session: AnySession, limit: int = 6) -> list[ProductCard]:
    stmt = (
        published_products()
        .outerjoin(Product.collection)
        .where(Product.featured_rank.is_not(None))
        .order_by(Product.featured_rank)
        .limit(limit)
    )
    return _as_cards(session, _card_query(stmt))[0]


def collections(session: AnySession) -> Sequence[Collection]:
    stmt = (
        select(Collection)
        .where(Collection.published.is_(True))
        .order_by(Collection.position, Collection.name)
    )
    return session.scalars(stmt).all()


@dataclass(frozen=True)
class CollectionCard:
    """What the home page shows of a collection."""

    slug: str
    name: str
    tagline: str
    artwork: str | None
    image: dict[str, str] | None


def collection_cards(session: AnySession) -> list[CollectionCard]:
    """The published collections, in order, as the home page shows them."""
    return [
        CollectionCard(c.slug, c.name, c.tagline, c.artwork, c.image) for c in collections(session)
    ]


def collection_by_slug(session: AnySession, slug: str) -> Collection | None:
    if not SLUG.fullmatch(slug):
        return None
    stmt = select(Collection).where(Collection.slug == slug, Collection.published.is_(True))
    return session.scalar(stmt)


def collection_products(session: AnySession, collection: Collection) -> list[ProductCard]:
    stmt = published_products().outerjoin(Product.collection)
    stmt = _ordered(stmt.where(Product.collection_id == collection.id), SortOrder.FEATURED)
    return _as_cards(session, _card_query(stmt))[0]


def product_by_slug(session: AnySession, slug: str) -> Product | None:
    """The published piece with everything its page shows, in two statements: the piece with
    its collection and its stock rows (joined: one row per variant), then its options (joined
    as well, they would multiply the rows by the variants)."""
    if not SLUG.fullmatch(slug):
        return None
    stmt = published_products().where(Product.slug == slug)
    stmt = stmt.options(
        joinedload(Product.collection),
        joinedload(Product.inventory),
        selectinload(Product.options),
    )
    return session.scalars(stmt).unique().one_or_none()


def pieces_by_id(session: AnySession, ids: Sequence[int]) -> list[Product]:
    """These pieces, published or not (a bag shows one no longer offered as such), each
    loaded as :func:`product_by_slug` loads a piece: with its collection, stock rows and
    options."""
    stmt = select(Product).where(Product.id.in_(ids))
    stmt = stmt.options(
        joinedload(Product.collection),
        joinedload(Product.inventory),
        selectinload(Product.options),
    )
    return list(session.scalars(stmt).unique())


# Built once: the stock rows of the published piece called ``:slug``, as they are now (read
# beside the catalogue's version to decide a change with a kept piece: ``web.fragments``).
PIECE_STOCK = (
    select(*Inventory.__table__.c)
    .join(Product, Product.id == Inventory.product_id)
    .where(Product.slug == bindparam("slug"), Product.published.is_(True))
)


# Built once: every page that keeps part of the catalogue asks it first.
CATALOG_VERSION = select(CatalogVersion.token).where(CatalogVersion.id == 1)


def catalog_version(session: AnySession) -> str | None:
    """The catalogue's version: a token renewed by every committed change to pieces,
    options, stock or collections (``CatalogVersion``), None if the row is missing."""
    return session.scalar(CATALOG_VERSION)


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
