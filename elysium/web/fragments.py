"""What catalogue pages show of the catalogue alone, kept in the cache under its version.

A page of cards, the listing's filter choices, the home page's collections: until the
catalogue changes they are the same for every shopper, so they are worked out once and kept
in the shop's cache (Redis when ``REDIS_URL`` is set, so every server shares them; else the
process's memory). Each is filed under the catalogue's version, a token that database
triggers renew as any change to pieces, options, stock or collections commits, whoever makes
it (``models.catalog.CatalogVersion``), except a reservation that leaves a variant "In stock"
before and after (migration 0009): what is kept shows stock only as that status. A request
reads the version first (one query, at most once per request), so the first request after a
change finds nothing under the new version and reads the database: a price, a stock state or
a piece taken off sale is never shown late, on any server. Only what is the same for
everyone is kept: hearts, the bag, a CSRF token are drawn for every request.

Keys also carry a digest of the code that makes what is kept (the shop's Python modules,
the templates, the drawings), so servers of a new release never
read what an older one kept in a shared Redis, nor the other way round (the digest is of the code
as the process loaded it: ``create_app`` reads it); and the house's day (London),
since a made-to-order piece promises a date ("ships by ..."). A value is kept only by a GET
or a HEAD, which read the version before anything else: a change (a refused "Add to bag"
drawing the product page again, say) may have read the catalogue before the version, and
what it drew is shown, never kept. A developer's server, which reloads edited templates,
keeps nothing. If the cache can't be reached, the value is worked out afresh and kept by the
process alone, with a log line, and the process leaves the shared cache alone for
``SHARED_RETRY_SECONDS`` (a Redis that hangs would cost every page its timeout once per kept
value); with no version to file it under (no row), nothing is kept.

Each process also keeps its own copies of the entries it used last (``NearCache``), for as
long as the shared cache does at most: what is filed under a version never changes, so a
copy is as good as the shared entry and costs no round trip to Redis. ``forget_kept()``
empties both.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import cache as once
from importlib import metadata
from pathlib import Path
from typing import Generic, TypeVar

from flask import Flask, current_app, g, has_request_context, render_template, request
from markupsafe import Markup
from sqlalchemy import Row, RowMapping, Select, inspect, literal, select, true
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.path_registry import PathRegistry

from elysium import house_time
from elysium.db_routing import READ_METHODS
from elysium.extensions import cache, db
from elysium.htmx import is_htmx
from elysium.models.cart import Cart, CartLine
from elysium.models.catalog import Product
from elysium.services import cart as carts
from elysium.services import catalog
from elysium.services.catalog import ProductCard
from elysium.web.cart import header_count_query

logger = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")

# Kept this long at most; a change of the catalogue retires an entry at once.
TIMEOUT_SECONDS = 300
# Entries each process keeps its own copy of, most recently used first (a page of cards
# pickles to a few kilobytes).
NEAR_ENTRIES = 512
NEAR_CACHE = "elysium.near_cache"
BRIEFLY = "elysium.briefly"
DRAWN_ONCE = "elysium.drawn_once"
# Blocks each process keeps drawn once (a handful of names, each with a key or two).
DRAWN_ONCE_ENTRIES = 256
UNKNOWN = object()
# After the shared cache fails to answer, each process leaves it alone this long.
SHARED_RETRY_SECONDS = 10
SHARED_DOWN = "elysium.shared_cache_down_until"


class NearCache:
    """The process's copies of kept entries, the ``size`` most recently used. Each is kept
    pickled, as Redis keeps it, so every request unpickles its own copy and may change it
    (a kept piece joins the request's session)."""

    def __init__(self, size: int = NEAR_ENTRIES, seconds: float = TIMEOUT_SECONDS) -> None:
        self.size = size
        self.seconds = seconds
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> object | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            until, data = entry
            if time.monotonic() >= until:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return pickle.loads(data)  # noqa: S301  (what this process pickled itself)

    def put(self, key: str, value: object) -> None:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._entries[key] = (time.monotonic() + self.seconds, data)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class Memo(Generic[V]):
    """What a process works out once and uses again (markup drawn, a query string read),
    under a key that names everything it depends on. It holds at most ``size`` entries and
    starts again empty when full, so keys asked for once (a search typed once) can't keep
    out for long those every page asks for. A value kept is shared by every request of the
    process: it must never be changed after it is made."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[Hashable, V] = {}

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        found = self._entries.get(key)
        if found is None:
            found = make()
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key] = found
        return found


def near_cache(app: Flask | None = None) -> NearCache:
    """This app's near cache (one per app, so two apps in one process keep apart)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(NEAR_CACHE)
    if found is None:
        found = app.extensions.setdefault(NEAR_CACHE, NearCache())
    return found


def forget_kept(app: Flask | None = None) -> None:
    """Empty the shared cache and this process's copies (tests, and after a deploy by hand):
    ``app``'s, whichever app's context is current."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():
        cache.clear()
    near_cache(app).clear()
    app.extensions.get(BRIEFLY, {}).clear()
    app.extensions.pop(SHARED_DOWN, None)


def briefly(name: str, seconds: float, make: Callable[[], T]) -> T:
    """``make()``, kept by this process for ``seconds`` under ``name``: for a value that can
    be a moment old without misleading anyone (which pieces are trending), so the pages that
    show it don't each ask Redis. Never a price or a stock state: those are :func:`kept`
    under the catalogue's version."""
    kept_here: dict[str, tuple[float, object]] = current_app.extensions.setdefault(BRIEFLY, {})
    now = time.monotonic()
    found = kept_here.get(name)
    if found is not None and found[0] > now:
        return found[1]  # type: ignore[return-value]
    value = make()
    kept_here[name] = (now + seconds, value)
    return value


def catalog_version() -> str | None:
    """The catalogue's version as this request reads it (once).

    A full page (a GET or HEAD without htmx) also shows the header's bag count
    (``web.cart.cart_count``): it is read in the same statement, one round trip for both,
    unless the request already knows it. A fragment or a change reads the version alone."""
    version = g.get("catalog_version", UNKNOWN)
    if version is UNKNOWN:
        count = _count_to_read()
        if count is None:
            version = catalog.catalog_version(db.session)
        else:
            statement, parameters = count
            version, items = db.session.execute(_version_and(statement), parameters).one()
            g.cart_count = int(items or 0)
        g.catalog_version = version
    return version  # type: ignore[return-value]


def _count_to_read() -> tuple[Select, dict[str, object]] | None:
    """The header's bag count, to read with the version: on a full page (a GET or HEAD
    without htmx) whose count is not known yet, and there is a bag to count."""
    if request.method in READ_METHODS and not is_htmx() and "cart_count" not in g:
        return header_count_query()
    return None


@once
def _version_and(count: Select) -> Select:
    """The catalogue's version and the bag count in one statement (built once for each)."""
    return select(catalog.CATALOG_VERSION.scalar_subquery(), count.scalar_subquery())


def read_with_version(rows: Select, parameters: dict[str, object]) -> list[Row]:
    """The rows of ``rows`` (a page's own small read, with its ``LIMIT``), read in the same
    statement as the catalogue's version (and, on a full page, the header's bag count) when
    this request has not read the version yet: one round trip for all three. The rows come
    in no particular order (the caller orders them); none is ever made up."""
    if "catalog_version" in g:
        return list(db.session.execute(rows, parameters))
    count = _count_to_read()
    count_statement, count_parameters = count if count is not None else (None, {})
    found = db.session.execute(
        _version_beside(rows, count_statement), {**parameters, **count_parameters}
    ).all()
    first = found[0]
    g.catalog_version = first[0]
    if count_statement is not None:
        g.cart_count = int(first[1] or 0)
    width = len(rows.selected_columns)
    return [row[-width:] for row in found if row[-width] is not None]


@once
def _version_beside(rows: Select, count: Select | None) -> Select:
    """The version (and the count) on each of ``rows``' rows, and on one row of NULLs when
    there are none: a row that is always there, joined with the rows on true."""
    one = select(literal(1).label("one")).subquery()
    found = rows.subquery()
    columns = [catalog.CATALOG_VERSION.scalar_subquery()]
    if count is not None:
        columns.append(count.scalar_subquery())
    return select(*columns, *found.c).select_from(one.outerjoin(found, true()))


PACKAGE = Path(__file__).resolve().parent.parent
TEMPLATES = PACKAGE.parent / "templates"


# Libraries whose objects are pickled in kept values, or that draw kept markup.
PICKLED_WITH = ("sqlalchemy", "flask", "jinja2", "markupsafe", "werkzeug")


@once
def code_version() -> str:
    """A digest of what shapes the kept values: the shop's modules (the prices, the stock
    states, the read models and the tables pickled are worked out there), the templates that
    draw kept markup, the drawings pictures name (their fingerprints are in the links) and
    the versions of the libraries whose objects are pickled (a release that only upgrades one
    never unpickles what the older one kept)."""
    digest = hashlib.sha256()
    for library in PICKLED_WITH:
        digest.update(f"{library}=={metadata.version(library)};".encode())
    for module in sorted(PACKAGE.rglob("*.py")):
        digest.update(module.read_bytes())
    files = sorted(TEMPLATES.rglob("*.html"))
    files += sorted((TEMPLATES / "art" / "products").glob("*.svg"))
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cache_key(name: str, version: str, key: Hashable) -> str:
    """Where a value is filed: the code, the house's day (a made-to-order promise is a date),
    the kind, the catalogue's version and the key."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    return f"catalog:{code_version()}:{house_time.today().isoformat()}:{name}:{version}:{digest}"


def kept(
    name: str, key: Hashable, make: Callable[[], T], *, keep: Callable[[T], bool] | None = None
) -> T:
    """``make()``, kept under the catalogue's current version, ``name`` and ``key`` (any value
    whose ``repr`` says everything the result depends on besides the catalogue); ``keep``
    may refuse a value that holds something of the shopper's. None is never kept."""
    return kept_many(name, [key], lambda _: [make()], keep=keep)[0]  # type: ignore[return-value]


def kept_many(
    name: str,
    keys: Sequence[object],
    make: Callable[[list], Sequence[T | None]],
    *,
    keep: Callable[[T], bool] | None = None,
) -> list[T | None]:
    """Many values of one kind, in the order of their keys, each kept as :func:`kept` keeps
    one: first this process's copies, then one read of the shared cache for the rest, then
    ``make(missing keys)`` for those still missing (a value for each, None where there is
    none), kept in one write."""
    if current_app.jinja_env.auto_reload or not keys:
        return list(make(list(keys)))
    version = catalog_version()
    if version is None:
        return list(make(list(keys)))
    filed = [cache_key(name, version, key) for key in keys]
    near = near_cache()
    found: list = [near.get(filed_key) for filed_key in filed]
    missing = [at for at, value in enumerate(found) if value is None]
    if not missing:
        return found
    shared = _read_shared(name, [filed[at] for at in missing])
    if shared is not None:
        for at, value in zip(missing, shared, strict=True):
            if value is not None:
                found[at] = value
                near.put(filed[at], value)
        missing = [at for at in missing if found[at] is None]
        if not missing:
            return found
    made = make([keys[at] for at in missing])
    # A change may have read the catalogue before the version: what it made is not kept.
    keeps = not has_request_context() or request.method in READ_METHODS
    to_keep = {}
    for at, value in zip(missing, made, strict=True):
        found[at] = value
        if keeps and value is not None and (keep is None or keep(value)):
            # Filed under the version, a copy is as good here whether Redis answered or not.
            near.put(filed[at], value)
            to_keep[filed[at]] = value
    if to_keep and shared is not None:
        try:
            cache.set_many(to_keep, timeout=TIMEOUT_SECONDS)
        except Exception:
            _shared_failed(f"written; {name} is kept by this process alone")
    return found


def _read_shared(name: str, filed: list[str]) -> list | None:
    """The shared cache's entries under these keys (None for each it hasn't got); None when it
    can't be read, or failed a moment ago (``SHARED_RETRY_SECONDS``): a Redis that hangs costs
    one request its timeout, not every ``kept`` of every request."""
    if time.monotonic() < current_app.extensions.get(SHARED_DOWN, 0.0):
        return None
    try:
        return cache.get_many(*filed)
    except Exception:
        _shared_failed(f"read; {name} is worked out afresh")
        return None


def _shared_failed(what: str) -> None:
    if time.monotonic() >= current_app.extensions.get(SHARED_DOWN, 0.0):
        logger.warning(
            "The cache could not be %s (left alone for %s s)", what, SHARED_RETRY_SECONDS
        )
    current_app.extensions[SHARED_DOWN] = time.monotonic() + SHARED_RETRY_SECONDS


def cards_to_show(ids: Sequence[int]) -> list[ProductCard]:
    """The cards of these published pieces, in this order (``catalog.product_cards``), each
    kept under the catalogue's version and its id: a card is the same wherever it shows, so a
    shopper's own list of pieces ("Recently viewed") costs no query for the cards already
    kept, and those that aren't are read together."""
    if not ids:
        return []

    def read(missing: list[int]) -> list[ProductCard | None]:
        cards = {card.id: card for card in catalog.product_cards(db.session, missing)}
        return [cards.get(product_id) for product_id in missing]

    return [card for card in kept_many("card", ids, read) if card is not None]


def kept_markup(name: str, *key: object, keep: bool = True, caller: Callable[[], str]) -> Markup:
    """For templates: ``{% call kept_markup("name", part, …) %}…{% endcall %}`` draws the block
    once per catalogue version and key, and shows the kept copy after. The parts must name
    everything the block shows besides the catalogue (a dict counts by its items), and the
    block must hold nothing of the shopper's: no CSRF token, bag or account, and hearts only
    as marks (``web.wishlist.heart_marks``). With ``keep`` false it is drawn afresh."""
    if not keep:
        return Markup(caller())  # noqa: S704  (escaped by the template as it was drawn)
    parts = tuple(tuple(sorted(part.items())) if isinstance(part, dict) else part for part in key)
    # The block's output was escaped by the template as it was drawn, so it is markup.
    return Markup(kept(f"markup:{name}", parts, caller))  # noqa: S704


def drawn_once(name: str, *key: object, caller: Callable[[], str]) -> Markup:
    """For templates: ``{% call drawn_once("name", part, …) %}…{% endcall %}`` draws the block
    once per process and key, and shows that copy after: for markup that depends on nothing
    but the code, the settings and the key (the site's header and footer, the fingerprinted
    addresses of the stylesheet and scripts). Not the catalogue (``kept_markup``), never the
    shopper's. A developer's server, which reloads edited templates, draws it every time."""
    if current_app.jinja_env.auto_reload:
        return Markup(caller())  # noqa: S704  (escaped by the template as it was drawn)
    # A link is drawn under the prefix the app is mounted at.
    root = request.script_root if has_request_context() else ""
    memo = current_app.extensions.get(DRAWN_ONCE)
    if memo is None:
        memo = current_app.extensions.setdefault(DRAWN_ONCE, Memo[Markup](DRAWN_ONCE_ENTRIES))
    return memo.get((name, root, key), lambda: Markup(caller()))  # noqa: S704


def card_links(cards: list[ProductCard], heading_level: int) -> dict[int, Markup]:
    """Each card's link (``partials/_product_card_link.html``), drawn now so it can be kept
    with the cards: the card partial shows it as it is (``card_links``)."""
    template = "partials/_product_card_link.html"
    return {
        # The template escapes what it shows (autoescaping), so its output is markup.
        card.id: Markup(  # noqa: S704
            render_template(template, product=card, card_heading_level=heading_level)
        )
        for card in cards
    }


def product_to_show(slug: str) -> Product | None:
    """The published piece called ``slug``, with everything its page shows
    (``catalog.product_by_slug``), to show it (the product page's context and its blocks, the
    price fragment). Kept per catalogue version; a kept copy
    joins this request's session without a query (``merge(load=False)``), so anything not
    kept would still load. Never to decide a change (what goes in a bag, an order, the
    stock) by itself: the stock kept may be a reservation late (:func:`product_to_add`)."""
    return _joined(_kept_product(slug))


def product_to_add(slug: str) -> Product | None:
    """The published piece called ``slug``, to decide what goes in a bag: its stock rows read
    now, in the statement that reads the catalogue's version, and the rest (words, options,
    prices: nothing changes them without a new version) from the copy kept under that version.
    A checkout's reservation can move the stock without a new version (migration 0009), so
    what goes in the bag is never decided on the kept stock: the kept rows take the values
    read now. One statement, where reading the piece takes two and loads it whole; without a
    kept copy, or if the copy's rows aren't the ones read (it can't be, under one version),
    the piece is read whole. A kept copy stays out of the request's session (joining it costs
    as much as the read it saves): it is kept whole, so nothing a bag change reads of it is
    left to load, and the change links the bag's line to the piece by its id."""
    if not catalog.SLUG.fullmatch(slug):
        return None
    columns = catalog.PIECE_STOCK.selected_columns.keys()
    rows = read_with_version(catalog.PIECE_STOCK, {"slug": slug})
    stock = {
        values["id"]: values for values in (dict(zip(columns, row, strict=True)) for row in rows)
    }
    found = _kept_product(slug)
    if found is None:
        return None  # not on sale under the version just read (None is never kept)
    if not _with_stock_now(found, stock):
        return catalog.product_by_slug(db.session, slug)
    return found


def _with_stock_now(piece: Product, rows: Mapping[int, Mapping[str, object]]) -> bool:
    """The kept piece's stock rows take the values just read (``rows``, by id); False, and
    nothing taken, when they aren't the same rows (it can't be, under one version)."""
    if {each.id for each in piece.inventory} != rows.keys():
        return False
    for each in piece.inventory:
        kept_values = each.__dict__
        for column, value in rows[each.id].items():
            if column not in kept_values or kept_values[column] != value:
                set_committed_value(each, column, value)
    return True


def bag_lines_to_show(cart: Cart) -> list[CartLine] | None:
    """The bag's lines for its page (a GET), each with its piece: the lines (read with the bag,
    ``current_cart(with_lines=True)``) and the pieces' stock rows read now, the rest of each
    piece (words, options, prices: nothing changes them without a new catalogue version) from
    the copy kept under that version, as :func:`product_to_add` takes it. One statement beside
    the bag's, where loading the pieces whole takes three and costs more than unpickling
    them; the kept copies stay out of the session. None
    (the bag then reads its lines whole) for a change, whose answer shows the bag as the
    change left it, and where a kept copy's stock rows aren't the ones read (it can't be,
    under one version)."""
    if request.method not in READ_METHODS:
        return None
    lines = list(cart.lines)
    if not lines:
        return lines
    ids = list(dict.fromkeys(line.product_id for line in lines))
    pieces = kept_many("piece", ids, _pieces)
    stock: dict[int, dict[int, RowMapping]] = {piece_id: {} for piece_id in ids}
    for row in db.session.execute(carts.BAG_STOCK, {"cart_id": cart.id}).mappings():
        stock.setdefault(row["product_id"], {})[row["id"]] = row
    by_id: dict[int, Product] = {}
    for piece in pieces:
        if piece is None or not _with_stock_now(piece, stock[piece.id]):
            return None
        by_id[piece.id] = piece
    for line in lines:
        set_committed_value(line, "product", by_id[line.product_id])
    return lines


def _pieces(ids: list[int]) -> list[Product | None]:
    found = {piece.id: _to_keep(piece) for piece in catalog.pieces_by_id(db.session, ids)}
    return [found.get(piece_id) for piece_id in ids]


def _kept_product(slug: str) -> Product | None:
    return kept("product", slug, lambda: _to_keep(catalog.product_by_slug(db.session, slug)))


def _to_keep(found: Product | None) -> Product | None:
    """A piece loaded whole, made lighter to keep: its objects forget the path and options
    they were loaded by, which SQLAlchemy pickles with each object and unpickling rebuilds at
    three times the cost of all the rest (0.47 → 0.12 ms for a ring's 21 objects). They
    would only tell a later load of this copy how to load what it hasn't got, and it has
    everything its pages and a bag read (``catalog.product_by_slug``)."""
    if found is None:
        return None
    for each in (found, found.collection, *found.inventory, *found.options):
        if each is not None:
            state = inspect(each)
            state.load_path = PathRegistry.root
            state.load_options = ()
    return found


def _joined(found: Product | None) -> Product | None:
    """A kept copy joins this request's session without a query (``merge(load=False)``)."""
    if found is not None and found not in db.session:
        found = db.session.merge(found, load=False)
    return found
