"""The wishlist's hearts, drawn on every page that shows a piece (cards, product pages)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import g, request
from flask_login import current_user

from elysium.extensions import db
from elysium.models.catalog import Product
from elysium.services import wishlist
from elysium.services.configuration import ConfigurationError, configure


@dataclass(frozen=True)
class Saved:
    pairs: frozenset[tuple[int, str]]

    @property
    def products(self) -> frozenset[int]:
        return frozenset(product_id for product_id, _ in self.pairs)


@dataclass(frozen=True)
class Heart:
    """What the heart partial draws. ``choices`` is None for a card (the piece as a whole)."""

    product: Product
    saved: bool
    choices: dict[str, str] | None
    next: str

    @property
    def scope(self) -> str:
        return "piece" if self.choices is None else "configuration"

    @property
    def chosen(self) -> dict[str, str]:
        return {name: value for name, value in (self.choices or {}).items() if value}


def _saved() -> Saved:
    """The signed-in shopper's saved pieces: one query per request, however many hearts."""
    if not current_user.is_authenticated:
        return Saved(frozenset())
    if "wishlist_saved" not in g:
        g.wishlist_saved = Saved(wishlist.saved_pairs(db.session, current_user.id))
    return g.wishlist_saved


def _here() -> str:
    return request.full_path.rstrip("?")


def wishlist_heart(
    product: Product, choices: dict[str, str] | None = None, next: str | None = None
) -> Heart:
    """A card's heart (any configuration saved), or, given the configurator's ``choices``,
    the product page's (this exact configuration saved)."""
    saved = _saved()
    if choices is None:
        state = product.id in saved.products
    else:
        try:
            state = (product.id, configure(product, choices).hash) in saved.pairs
        except ConfigurationError:
            state = False
    return Heart(product, state, choices, next or _here())
