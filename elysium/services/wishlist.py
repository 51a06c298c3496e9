"""The wishlist: pieces a shopper keeps, each in one exact configuration.

Only the configuration is stored. The price and availability are computed when the list is
shown, so a saved piece always shows today's price, and a configuration the catalogue no
longer offers is noticed (and can only be removed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import joinedload, selectinload

from elysium.models.cart import Cart, WishlistItem
from elysium.models.catalog import Product
from elysium.services import cart as carts
from elysium.services.configuration import (
    Configuration,
    ConfigurationError,
    PriceBreakdown,
    configure,
    price_breakdown,
    summary,
)
from elysium.services.inventory import Availability, variant_availability
from elysium.services.sql import AnySession

WISHLIST_LIMIT = 100
NO_LONGER_OFFERED = "This piece is no longer offered."
CHANGED = "This configuration is no longer offered. Remove it, then choose the piece again."
NEEDS_SIZE = "Choose your ring size on the piece's page, then add it to your bag from there."
ALREADY_MOVED = "This piece has just been moved to your bag."


class WishlistError(Exception):
    """A wishlist change that can't be made; ``message`` says why, for the shopper."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SavedPiece:
    """A wishlist item as shown today; ``configuration`` is None when it can't be bought."""

    item: WishlistItem
    configuration: Configuration | None
    problem: str | None

    @property
    def product(self) -> Product:
        return self.item.product

    @property
    def needs_size(self) -> bool:
        """A ring saved before its size was chosen can't go in the bag as it is."""
        return (
            self.configuration is not None
            and self.product.has_ring_size
            and not self.configuration.size
        )

    @property
    def summary(self) -> str:
        return summary(self.product, Configuration.from_canonical(self.item.configuration))

    @property
    def price(self) -> PriceBreakdown | None:
        if self.configuration is None:
            return None
        return price_breakdown(self.product, self.configuration)

    @property
    def availability(self) -> Availability | None:
        if self.configuration is None:
            return None
        return variant_availability(self.product, self.configuration.variant_key)


def saved_pairs(session: AnySession, user_id: int) -> frozenset[tuple[int, str]]:
    """Every (product id, configuration hash) the user has saved, in one query."""
    stmt = select(WishlistItem.product_id, WishlistItem.configuration_hash).where(
        WishlistItem.user_id == user_id
    )
    return frozenset((product_id, digest) for product_id, digest in session.execute(stmt))


def count(session: AnySession, user_id: int) -> int:
    stmt = select(func.count()).where(WishlistItem.user_id == user_id)
    return session.scalar(stmt) or 0


def _save(
    session: AnySession, user_id: int, product: Product, configuration: Configuration
) -> None:
    """Insert unless already saved: a double click racing itself never fails or duplicates,
    and a full wishlist refuses a new piece, never one it holds already."""
    if count(session, user_id) >= WISHLIST_LIMIT and not _is_saved(
        session, user_id, product, configuration
    ):
        raise WishlistError(
            f"Your wishlist holds up to {WISHLIST_LIMIT} pieces. "
            "Remove one to make room for this one."
        )
    dialect = session.get_bind(WishlistItem).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(WishlistItem)
        .values(
            user_id=user_id,
            product_id=product.id,
            configuration=configuration.canonical(),
            configuration_hash=configuration.hash,
        )
        .on_conflict_do_nothing(index_elements=["user_id", "product_id", "configuration_hash"])
    )


def _is_saved(
    session: AnySession, user_id: int, product: Product, configuration: Configuration
) -> bool:
    found = select(WishlistItem.id).where(
        WishlistItem.user_id == user_id,
        WishlistItem.product_id == product.id,
        WishlistItem.configuration_hash == configuration.hash,
    )
    return session.scalar(found) is not None


def toggle(
    session: AnySession,
    user_id: int,
    product: Product,
    configuration: Configuration,
    intent: str = "",
) -> bool:
    """Save this exact configuration, or remove it if it is saved. True when now saved.
    ``intent`` ("save" or "remove": what the heart pressed offered) does that whatever is
    saved now: a heart drawn before a change elsewhere (another tab, a page a moment old)
    never undoes what it didn't show."""
    if intent == "save":
        _save(session, user_id, product, configuration)
        return True
    removed = session.execute(
        delete(WishlistItem).where(
            WishlistItem.user_id == user_id,
            WishlistItem.product_id == product.id,
            WishlistItem.configuration_hash == configuration.hash,
        )
    )
    if removed.rowcount or intent == "remove":
        return False
    _save(session, user_id, product, configuration)
    return True


def toggle_piece(session: AnySession, user_id: int, product: Product, intent: str = "") -> bool:
    """A listing card's heart: remove every saved configuration of the piece, or, when none is
    saved, save its default one. True when now saved. ``intent`` as for :func:`toggle`: a
    card drawn showing the piece unsaved saves it, never removing the versions saved since."""
    if intent == "save":
        saved = session.scalar(
            select(WishlistItem.id)
            .where(WishlistItem.user_id == user_id, WishlistItem.product_id == product.id)
            .limit(1)
        )
        if saved is None:
            _save(session, user_id, product, configure(product, {}))
        return True
    removed = session.execute(
        delete(WishlistItem).where(
            WishlistItem.user_id == user_id, WishlistItem.product_id == product.id
        )
    )
    if removed.rowcount or intent == "remove":
        return False
    _save(session, user_id, product, configure(product, {}))
    return True


def _checked(item: WishlistItem) -> SavedPiece:
    product = item.product
    if not product.published:
        return SavedPiece(item, None, NO_LONGER_OFFERED)
    try:
        configuration = configure(product, item.configuration)
    except ConfigurationError:
        return SavedPiece(item, None, CHANGED)
    if configuration.hash != item.configuration_hash:
        # The catalogue changed under it (e.g. a diamond choice was added): the piece the
        # shopper saved is not the one we would now sell under this configuration.
        return SavedPiece(item, None, CHANGED)
    return SavedPiece(item, configuration, None)


def saved_pieces(session: AnySession, user_id: int) -> list[SavedPiece]:
    """The wishlist, newest first, with everything the page shows in a constant number of
    queries."""
    stmt = (
        select(WishlistItem)
        .where(WishlistItem.user_id == user_id)
        .options(
            joinedload(WishlistItem.product).options(
                selectinload(Product.options), selectinload(Product.inventory)
            )
        )
        .order_by(WishlistItem.created_at.desc(), WishlistItem.id.desc())
    )
    items: Sequence[WishlistItem] = session.scalars(stmt).unique().all()
    return [_checked(item) for item in items]


def saved_piece(session: AnySession, user_id: int, item_id: int) -> SavedPiece | None:
    """One of the user's saved pieces; anyone else's is None."""
    stmt = (
        select(WishlistItem)
        .where(WishlistItem.id == item_id, WishlistItem.user_id == user_id)
        .options(
            joinedload(WishlistItem.product).options(
                selectinload(Product.options), selectinload(Product.inventory)
            )
        )
    )
    item = session.scalars(stmt).unique().one_or_none()
    return _checked(item) if item is not None else None


def remove(session: AnySession, piece: SavedPiece) -> None:
    session.delete(piece.item)
    session.flush()


def move_to_cart(
    session: AnySession, user_id: int, piece: SavedPiece
) -> tuple[Cart, carts.LineChange]:
    """Add the saved configuration to the user's bag and take it off the wishlist.

    Raises :class:`WishlistError` when the configuration is no longer offered or a ring has
    no size yet; the bag's :class:`~elysium.services.cart.CartError` (e.g. a frozen bag, a
    sold-out variant) goes through, and the item stays.
    """
    if piece.configuration is None:
        raise WishlistError(piece.problem or CHANGED)
    if piece.needs_size:
        raise WishlistError(NEEDS_SIZE)
    cart = carts.cart_for(session, user_id=user_id, create=True)
    change = carts.add_item(session, cart, piece.product, piece.configuration, quantity=1)
    # Off the wishlist in one statement that says whether it was still there: the same piece
    # moved from two windows at once goes in the bag once. The second window's add waited for
    # the first's bag; finding the piece gone, it raises, and its caller rolls the add back.
    taken = session.execute(
        delete(WishlistItem)
        .where(WishlistItem.id == piece.item.id, WishlistItem.user_id == user_id)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:
        raise WishlistError(ALREADY_MOVED)
    session.expunge(piece.item)
    return cart, change
