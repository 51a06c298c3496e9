"""The wishlist's hearts, drawn on every page that shows a piece (cards, product pages)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, request, url_for
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup, escape

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
    def action(self) -> str:
        """Where a heart posts: one URL, worked out once for a page of hearts."""
        if "wishlist_toggle_url" not in g:
            g.wishlist_toggle_url = url_for("wishlist.toggle")
        return g.wishlist_toggle_url

    @property
    def csrf_token(self) -> str:
        """The page's CSRF token (``csrf_token()``), asked for once for a page of hearts."""
        if "wishlist_csrf_token" not in g:
            g.wishlist_csrf_token = generate_csrf()
        return g.wishlist_csrf_token

    @property
    def chosen(self) -> dict[str, str]:
        return {name: value for name, value in (self.choices or {}).items() if value}


def _saved() -> Saved:
    """The signed-in shopper's saved pieces: one query per request, however many hearts."""
    if "wishlist_saved" not in g:
        if current_user.is_authenticated:
            g.wishlist_saved = Saved(wishlist.saved_pairs(db.session, current_user.id))
        else:
            g.wishlist_saved = Saved(frozenset())
    return g.wishlist_saved


def _here(product: Product | None = None, choices: dict[str, str] | None = None) -> str:
    """The page the hearts are on (where a heart's post comes back to). A page drawn in
    answer to a form (an "Add to bag" refused: the product page at ``POST /cart/items``) is
    not at its address, which a GET can't open: a piece's heart there comes back to the
    piece's page in the choices shown (no such page draws a page of cards)."""
    if request.method not in ("GET", "HEAD"):
        if product is None:
            return url_for("shop.home")
        chosen = {name: value for name, value in (choices or {}).items() if value}
        return url_for("shop.product", slug=product.slug, **chosen)
    if "wishlist_here" not in g:
        g.wishlist_here = request.full_path.rstrip("?")
    return g.wishlist_here


def wishlist_heart(
    product: Product, choices: dict[str, str] | None = None, next: str | None = None
) -> Heart:
    """A card's heart (any configuration saved), or, given the configurator's ``choices``,
    the product page's (this exact configuration saved)."""
    saved = _saved()
    if choices is None:
        state = product.id in saved.products
    else:
        state = (product.id, _configuration_hash(product, choices)) in saved.pairs
    return Heart(product, state, choices, next or _here(product, choices))


def _configuration_hash(product: Any, choices: dict[str, str]) -> str | None:
    """The hash of the piece in these choices (None if they don't make one), as the product
    page worked it out when it kept its context (``configuration_hashes``), else afresh."""
    known = getattr(product, "configuration_hashes", None) or {}
    chosen = tuple(choices.items())
    if chosen in known:
        return known[chosen]
    try:
        return configure(product, choices).hash
    except ConfigurationError:
        return None


@dataclass(frozen=True)
class _StandIn:
    """A piece that is only marks, for drawing a card's heart once for a whole page."""

    id: str
    slug: str
    name: str


_MARK = "\ue000"  # a private-use character: markup escaping leaves it as it is
_STAND_IN = _StandIn(f"{_MARK}id{_MARK}", f"{_MARK}slug{_MARK}", f"{_MARK}name{_MARK}")


def card_hearts(cards: Iterable[Any]) -> dict[int, Markup]:
    """The hearts of a page of cards (``card_hearts``): the heart (``wishlist/_heart.html``,
    its one template) is drawn once per state shown, saved or not, for a stand-in piece, and
    each card's heart is that markup with the piece's id, slug and name put in, escaped as
    the template escapes them. Everything else in a card's heart (the CSRF token, where it
    posts, the page it comes back to) is the same for the whole page. A piece whose text
    holds the stand-in's mark is drawn the ordinary way."""
    heart_form = current_app.jinja_env.get_template("wishlist/_heart.html").module.heart_form
    saved, here = _saved().products, _here()
    drawn: dict[bool, str] = {}
    hearts: dict[int, Markup] = {}
    for card in cards:
        state = card.id in saved
        if _MARK in card.slug or _MARK in card.name:
            hearts[card.id] = heart_form(Heart(card, state, None, here))
            continue
        if state not in drawn:
            drawn[state] = str(heart_form(Heart(_STAND_IN, state, None, here)))  # type: ignore[arg-type]
        hearts[card.id] = Markup(  # noqa: S704 (the template's markup, values escaped here)
            drawn[state]
            .replace(_STAND_IN.id, str(int(card.id)))
            .replace(_STAND_IN.slug, escape(card.slug))
            .replace(_STAND_IN.name, escape(card.name))
        )
    return hearts


# Where a card's heart goes in a page of cards kept for everyone: an HTML comment, which
# nothing a template escapes can turn into (its "<" would be "&lt;").
_HEART_MARK = re.compile(r"<!--heart:(\d+)-->")


def heart_marks(cards: Iterable[Any]) -> dict[int, Markup]:
    """A page of cards kept for every shopper (``kept_markup``) is drawn with these in the
    hearts' place (``card_hearts``); :func:`put_hearts` puts the shopper's in as it is sent."""
    return {card.id: Markup(f"<!--heart:{int(card.id)}-->") for card in cards}  # noqa: S704


def put_hearts(html: str, cards: Iterable[Any]) -> str:
    """``html`` with each mark of :func:`heart_marks` replaced by this shopper's heart for
    that card (:func:`card_hearts`), in one pass."""
    hearts = card_hearts(cards)
    return _HEART_MARK.sub(lambda mark: hearts.get(int(mark[1]), ""), html)
