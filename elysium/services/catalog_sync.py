"""Following the house's Sanity studio: collections and products upserted from its documents.

The service takes documents (the contract's projection, see docs) and never fetches them
itself, so the command, the webhook and the tests feed it the same way. Each document is
validated completely before anything is written, and written in its own transaction: a bad
document is skipped with its reason and never half-written, and one failure never stops the
rest. Rows are matched by ``external_id`` (the Sanity ``_id``), else a demo piece with the same
slug and no ``external_id`` is adopted. Nothing is written when nothing changed, so running
the same documents again reports nothing updated. Stock is not Sanity's: a new variant gets a
row at zero (made to order when the piece has a lead time) and an existing row is never
touched. Orders never change: their lines are snapshots.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from elysium.integrations import stripe_gateway
from elysium.models.catalog import Category, Collection, OptionKind, Product, ProductOption
from elysium.models.inventory import Inventory
from elysium.models.types import utcnow
from elysium.services.inventory import MAX_LEAD_TIME_WEEKS
from elysium.services.sql import AnySession, storable, take_turns_on_sqlite

logger = logging.getLogger(__name__)

METAL_CODES = frozenset({"yellow-gold", "white-gold", "rose-gold", "platinum"})
DIAMOND_CODE = re.compile(r"\d+\.\d\dct")
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
IMAGE_PREFIX = "https://cdn.sanity.io/images/"
DRAFT_PREFIX = "drafts."
DEFAULT_CURRENCY = "GBP"
MAX_INT = 2**31 - 1  # the columns are 32-bit integers
REVISION_LENGTH = 64  # the source_revision columns
# The revision a row keeps for its document's deletion (:func:`unpublish_deleted`): never a
# Sanity ``_rev`` (letters and digits).
DELETED_REVISION = "(deleted)"
SANITY_STAMP = timedelta(seconds=1)  # what Sanity stamps ``_updatedAt`` to


# How far the clocks of the hosts that write the catalogue may disagree (see _unpublish_missing).
LISTING_CLOCK_MARGIN = timedelta(minutes=5)
# The share of the pieces (or collections) on sale one run may take off sale, unless told it
# may take more (see _unpublish_missing).
MOST_UNPUBLISHED_AT_ONCE = 0.5


class InvalidDocumentError(ValueError):
    """The document can't be used; ``reason`` says why (logged and reported)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NotInTheShopYetError(InvalidDocumentError):
    """The document names another (its collection) that the shop doesn't hold yet: made in
    the studio a moment before, its own change may not have been applied yet."""


# The row as it was read: its document's ``_updatedAt`` and ``_rev``, and when the shop last
# wrote it (``updated_at``). The same three later: nothing was written to it meanwhile.
AsRead = tuple[datetime | None, str | None, datetime]


class SameSecondError(InvalidDocumentError):
    """The shop holds another edit of the document stamped within the same second (Sanity
    stamps ``_updatedAt`` to the second): which of the two is the later can't be told from
    them, so nothing is written. Sanity, asked again once the row was read, answers the later
    one (``row``: the row as it was read, to write that answer over it only if it still is
    so)."""

    def __init__(self, reason: str, row: AsRead):
        super().__init__(reason)
        self.row = row


class DeletedInTheSameSecondError(Exception):
    """Sanity answered that the document is gone, asked within the second the edit the shop
    holds is stamped with: whether it deleted that edit, or the edit (the piece restored) came
    after its answer, can't be told. Nothing is hidden: the change is tried again, and
    Sanity's next answer settles it."""


@dataclass
class Skipped:
    doc_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.doc_id}: {self.reason}"


@dataclass
class HeldBack:
    """Rows Sanity's listing lacks, too many of those on sale to unpublish in one run."""

    kind: str
    missing: int
    on_sale: int

    def __str__(self) -> str:
        return (
            f"{self.missing} of the {self.on_sale} {self.kind}s on sale are not in Sanity's listing"
        )


@dataclass
class SyncReport:
    collections_created: int = 0
    collections_updated: int = 0
    collections_unpublished: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    unpublished: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    held_back: list[HeldBack] = field(default_factory=list)

    def count(self, kind: str, outcome: str) -> None:
        if outcome == "skipped":
            return
        name = outcome if kind == "product" else f"collections_{outcome}"
        if hasattr(self, name):
            setattr(self, name, getattr(self, name) + 1)

    def __str__(self) -> str:
        return (
            f"collections: {self.collections_created} created, {self.collections_updated} "
            f"updated, {self.collections_unpublished} unpublished; products: {self.created} "
            f"created, {self.updated} updated, {self.unpublished} unpublished, "
            f"{self.unchanged} unchanged; {len(self.skipped)} skipped"
        )


# --- validation -------------------------------------------------------------------------


def _text(doc: dict[str, Any], name: str, *, required: bool = True, limit: int = 0) -> str:
    value = doc.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidDocumentError(f"{name} is missing or not text")
    if limit and len(value) > limit:
        raise InvalidDocumentError(f"{name} is longer than {limit} characters")
    return value.strip()


def _int(
    doc: dict[str, Any],
    name: str,
    *,
    required: bool = True,
    minimum: int = 0,
    maximum: int | None = None,
) -> int | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidDocumentError(f"{name} must be a whole number (minor units for prices)")
    if value < minimum:
        raise InvalidDocumentError(f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise InvalidDocumentError(f"{name} must be at most {maximum}")
    if value > MAX_INT:
        raise InvalidDocumentError(f"{name} is too large")
    return value


def _slug(doc: dict[str, Any], limit: int) -> str:
    slug = doc.get("slug")
    if not isinstance(slug, str) or not SLUG.fullmatch(slug) or len(slug) > limit:
        raise InvalidDocumentError(f"slug {slug!r} is not lower-case words joined by hyphens")
    return slug


def _seo(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    seo = doc.get("seo")
    if seo is None:
        return None, None
    if not isinstance(seo, dict):
        raise InvalidDocumentError("seo must be an object")
    values = []
    for name, limit in (("title", 200), ("description", 320)):
        value = seo.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise InvalidDocumentError(f"seo.{name} must be text of at most {limit} characters")
        values.append(value.strip() or None if isinstance(value, str) else None)
    return values[0], values[1]


def _check_id(doc: dict[str, Any], doc_type: str) -> str:
    doc_id = doc.get("_id")
    if not isinstance(doc_id, str) or not doc_id or len(doc_id) > 120:
        raise InvalidDocumentError("_id is missing")
    if doc.get("_type") != doc_type:
        raise InvalidDocumentError(f"_type is {doc.get('_type')!r}, not {doc_type!r}")
    if where := _unstorable(doc):
        # Neither database takes it: refused as malformed, not retried as a failure.
        raise InvalidDocumentError(f"{where} holds a NUL or a character that isn't Unicode")
    return doc_id


def _unstorable(value: Any, where: str = "") -> str | None:
    """Where in a document (its field's path) text no database can hold is, if anywhere."""
    if isinstance(value, str):
        return None if storable(value) else where or "the document"
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, each in items:
        path = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and not storable(key):
            return where or "the document"
        if found := _unstorable(each, path):
            return found
    return None


def collection_values(doc: dict[str, Any]) -> dict[str, Any]:
    """The collection's columns from a document; :class:`InvalidDocumentError` if unusable."""
    _check_id(doc, "collection")
    seo_title, seo_description = _seo(doc)
    return {
        "slug": _slug(doc, 80),
        "name": _text(doc, "title", limit=120),
        "tagline": _text(doc, "tagline", required=False, limit=200),
        "description": _text(doc, "description", required=False),
        "position": _int(doc, "position", required=False) or 0,
        "image": _image(doc.get("image"), "image"),
        "seo_title": seo_title,
        "seo_description": seo_description,
        "published": True,
    }


def _options(doc: dict[str, Any], name: str, kind: OptionKind) -> list[dict[str, Any]]:
    raw = doc.get(name)
    if raw is None and kind is OptionKind.DIAMOND:
        return []
    if not isinstance(raw, list) or (kind is OptionKind.METAL and not raw):
        raise InvalidDocumentError(f"{name} must be a list (with at least one metal)")
    options, seen = [], set()
    for position, option in enumerate(raw):
        if not isinstance(option, dict):
            raise InvalidDocumentError(f"{name}[{position}] must be an object")
        code = option.get("code")
        known = isinstance(code, str) and (
            code in METAL_CODES
            if kind is OptionKind.METAL
            else DIAMOND_CODE.fullmatch(code) is not None
        )
        if not known or len(code) > 40:
            raise InvalidDocumentError(f"{name}[{position}] has an unknown code {code!r}")
        if code in seen:
            raise InvalidDocumentError(f"{name} has the code {code!r} twice")
        seen.add(code)
        options.append(
            {
                "kind": kind,
                "code": code,
                "label": _text(option, "label", limit=120),
                "price_delta": _int(option, "priceDelta"),
                "position": position,
            }
        )
    return options


def _image(image: Any, name: str) -> dict[str, str] | None:
    """``{"url": <Sanity CDN URL>, "alt": <text>}``, or None when there is no image."""
    if image is None:
        return None
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not url.startswith(IMAGE_PREFIX) or len(url) > 500:
        raise InvalidDocumentError(f"{name} is not a Sanity CDN image URL")
    alt = image.get("alt")
    return {"url": url, "alt": alt.strip() if isinstance(alt, str) else ""}


def _images(doc: dict[str, Any]) -> list[dict[str, str]]:
    raw = doc.get("images") or []
    if not isinstance(raw, list):
        raise InvalidDocumentError("images must be a list")
    images = []
    for position, image in enumerate(raw):
        found = _image(image, f"images[{position}]")
        if found is None:
            raise InvalidDocumentError(f"images[{position}] is not a Sanity CDN image URL")
        images.append(found)
    return images


def product_values(doc: dict[str, Any], currency: str = DEFAULT_CURRENCY) -> dict[str, Any]:
    """The product's columns and options from a document; :class:`InvalidDocumentError` if
    anything is unusable (nothing is written for it)."""
    _check_id(doc, "product")
    category = doc.get("category")
    if not isinstance(category, str) or category not in {c.value for c in Category}:
        raise InvalidDocumentError(f"category {category!r} is not one the shop sells")
    if doc.get("currency") != currency:
        raise InvalidDocumentError(f"currency {doc.get('currency')!r} is not the shop's {currency}")
    published = doc.get("published")
    if not isinstance(published, bool):
        raise InvalidDocumentError("published must be true or false")
    details = doc.get("details") or []
    if not isinstance(details, list) or not all(isinstance(d, str) for d in details):
        raise InvalidDocumentError("details must be a list of text")
    released = doc.get("releasedAt")
    try:
        released_at = datetime.combine(date.fromisoformat(released), datetime.min.time(), UTC)
    except (TypeError, ValueError):
        raise InvalidDocumentError(f"releasedAt {released!r} is not a date") from None
    collection = doc.get("collection")
    if collection is not None and (
        not isinstance(collection, str) or not SLUG.fullmatch(collection)
    ):
        raise InvalidDocumentError(f"collection {collection!r} is not a collection slug")
    seo_title, seo_description = _seo(doc)
    return {
        "slug": _slug(doc, 120),
        "name": _text(doc, "title", limit=160),
        "category": Category(category),
        "collection_slug": collection,
        "description": _text(doc, "description", required=False),
        "details": [d.strip() for d in details if d.strip()],
        # The "from" price (options only add): a piece priced below what Stripe takes could
        # be bagged but never paid for.
        "base_price": _int(doc, "basePrice", minimum=stripe_gateway.min_amount(currency)),
        "currency": currency,
        "engraving_fee": _int(doc, "engravingFee", required=False),
        "lead_time_weeks": _int(
            doc, "leadTimeWeeks", required=False, minimum=1, maximum=MAX_LEAD_TIME_WEEKS
        ),
        "featured_rank": _int(doc, "featuredRank", required=False, minimum=-(2**31)),
        "released_at": released_at,
        "published": published,
        "seo_title": seo_title,
        "seo_description": seo_description,
        "images": _images(doc),
        "options": _options(doc, "metals", OptionKind.METAL)
        + _options(doc, "diamonds", OptionKind.DIAMOND),
    }


# --- writing ----------------------------------------------------------------------------


def _set(obj: object, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        current = getattr(obj, name)
        if isinstance(current, datetime) and isinstance(value, datetime):
            same = current.replace(tzinfo=current.tzinfo or UTC) == value
        else:
            same = current == value
        if not same:
            setattr(obj, name, value)
            changed = True
    return changed


class _WrittenMeanwhileError(Exception):
    """Another host wrote the same document between two of our reads."""


def _check_slug(
    session: AnySession, model: type, slug: str, row: object | None, doc_id: str
) -> None:
    """Refuse a slug another row holds (another Sanity document's, or a shop row that
    can't be adopted because it already belongs to a different document). A row of another
    document that is off sale (gone from Sanity, kept for its orders) gives its slug up: the
    studio made the piece again under it, and it would otherwise never reach the shop."""
    holder = session.scalar(select(model).where(model.slug == slug))
    if holder is not None and holder is not row and holder.external_id == doc_id:
        raise _WrittenMeanwhileError()  # another host wrote this document since we looked: retry
    if holder is not None and holder is not row:
        if holder.external_id is not None and not holder.published:
            holder.slug = _retired_slug(model, holder)
            session.flush()
            return
        owner = holder.external_id or "a piece not from Sanity"
        raise InvalidDocumentError(f"slug {slug!r} is taken by {owner}")


def _retired_slug(model: type, holder: Any) -> str:
    """A slug of its own for a row off sale that gives up the one it had (``-retired-<id>``,
    within the column's length)."""
    tail = f"-retired-{holder.id}"
    limit = model.__table__.c.slug.type.length  # type: ignore[attr-defined]
    return holder.slug[: limit - len(tail)].rstrip("-") + tail


def _edited_at(doc: dict[str, Any]) -> datetime | None:
    """When Sanity last edited the document (``_updatedAt``); None when it doesn't say."""
    raw = doc.get("_updatedAt")
    if not isinstance(raw, str):
        return None
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _revision(doc: dict[str, Any]) -> str | None:
    """Which edit of the document this is (Sanity's ``_rev``); None when it doesn't say."""
    raw = doc.get("_rev")
    return raw if isinstance(raw, str) and 0 < len(raw) <= REVISION_LENGTH else None


def _edit_written(doc: dict[str, Any]) -> dict[str, Any]:
    """The edit a row is written from, kept with it (:func:`_already_written`)."""
    edited_at = _edited_at(doc)
    if edited_at is None:
        return {}
    return {"source_updated_at": edited_at, "source_revision": _revision(doc)}


def _already_written(
    session: AnySession,
    model: type,
    doc: dict[str, Any],
    published: bool,
    hidden_before: datetime | None,
    row_when_asked: AsRead | None,
) -> str | None:
    """``unchanged`` when the row was written from this very edit of the document (its time,
    and its revision where both say), ``older`` when it holds a later one (a sync's page
    fetched before the webhook wrote a change: a piece taken off sale, a new price; an
    applier's late answer); None to write it. Before a write the row is taken and looked at
    again, so two writers of one document take turns and the second compares with what the
    first wrote. An edit already written costs one read and takes nothing (on SQLite taking a
    row is a write, which would renew the catalogue's version for every piece an hourly sync
    finds unchanged).

    Sanity stamps the time to the second, so another edit of the same second is another
    revision, and which of the two is the later can't be told from them:
    :class:`SameSecondError`, nothing written, unless the row is still as it was before Sanity
    was asked for this copy (``row_when_asked``: the hourly sync's listing, read after the
    row was, or an applier asking again): then this copy is the later, and is written.

    ``hidden_before`` (the hourly sync: when its listing began, less the hosts' clock
    margin): a row hidden before then although this very edit, listed since, says it is on
    sale is written again, whatever hid it (a deletion's answer that came late). One hidden
    after the listing began is left hidden: the studio may have deleted it meanwhile."""
    columns = (
        model.id,
        model.source_updated_at,
        model.source_revision,
        model.published,
        model.updated_at,
    )
    found = session.execute(select(*columns).where(model.external_id == doc["_id"])).one_or_none()
    if found is None:
        return None
    outcome = _compared(doc, published, found, hidden_before, row_when_asked)
    if outcome is not None:
        return outcome
    take_turns_on_sqlite(session, model, found.id)
    found = session.execute(select(*columns).where(model.id == found.id).with_for_update()).one()
    return _compared(doc, published, found, hidden_before, row_when_asked)


def _compared(
    doc: dict[str, Any],
    published: bool,
    found: Any,
    hidden_before: datetime | None,
    row_when_asked: AsRead | None,
) -> str | None:
    """What :func:`_already_written` says of ``doc`` against the row ``found`` as read."""
    edited_at, revision = _edited_at(doc), _revision(doc)
    _row_id, written, written_revision, on_sale, changed_at = found
    if edited_at is None or written is None:
        return None  # nothing to compare it with: written, as always
    asked_since = row_when_asked == (written, written_revision, changed_at)
    if written_revision == DELETED_REVISION:
        # Deleted as far as Sanity said, asked within that second: an edit made before it is
        # older, one made after it (the piece restored) is written. Sanity's own word on the
        # document, asked for after the row was read so, is written whatever its stamp.
        if asked_since or edited_at >= written + SANITY_STAMP:
            return None
        if edited_at < written:
            return "older"
        raise SameSecondError(
            f"deleted in the same second ({written.isoformat()}): which came last is left "
            "to Sanity's next answer",
            (written, written_revision, changed_at),
        )
    if edited_at < written:
        return "older"
    if edited_at > written:
        return None
    if revision in (None, written_revision) or written_revision is None:
        # This very edit (or one written before revisions were kept: taken for it).
        hidden = not on_sale and hidden_before is not None
        hidden_wrongly = published and hidden and changed_at < hidden_before
        return None if hidden_wrongly else "unchanged"
    if asked_since:
        return None  # Sanity was asked for this copy after the row was written: the later
    raise SameSecondError(
        f"another edit of the same second ({written.isoformat()}, revision "
        f"{written_revision}) is written: which is the later is left to Sanity's next answer",
        (written, written_revision, changed_at),
    )


def _apply_collection(
    session: AnySession,
    doc: dict[str, Any],
    hidden_before: datetime | None,
    row_when_asked: AsRead | None,
) -> str:
    values = collection_values(doc)
    doc_id = doc["_id"]
    outcome = _already_written(
        session, Collection, doc, values["published"], hidden_before, row_when_asked
    )
    if outcome is not None:
        return outcome
    values.update(_edit_written(doc))
    collection = session.scalar(select(Collection).where(Collection.external_id == doc_id))
    if collection is None:
        collection = session.scalar(
            select(Collection).where(
                Collection.slug == values["slug"], Collection.external_id.is_(None)
            )
        )
        _check_slug(session, Collection, values["slug"], collection, doc_id)
        if collection is None:
            session.add(Collection(external_id=doc_id, **values))
            return "created"
        collection.external_id = doc_id
        _set(collection, values)
        return "updated"
    _check_slug(session, Collection, values["slug"], collection, doc_id)
    return "updated" if _set(collection, values) else "unchanged"


def _variant_keys(options: list[dict[str, Any]]) -> list[str]:
    metals = [o["code"] for o in options if o["kind"] is OptionKind.METAL]
    diamonds = [o["code"] for o in options if o["kind"] is OptionKind.DIAMOND]
    if not diamonds:
        return metals
    return [f"{metal}/{diamond}" for metal in metals for diamond in diamonds]


def _sync_options(product: Product, wanted: list[dict[str, Any]]) -> bool:
    """Add, update and remove options by (kind, code); a kept code keeps its row (and id)."""
    existing = {(option.kind, option.code): option for option in product.options}
    changed = False
    keep = set()
    for option in wanted:
        key = (option["kind"], option["code"])
        keep.add(key)
        values = {k: option[k] for k in ("label", "price_delta", "position")}
        if key in existing:
            changed |= _set(existing[key], values)
        else:
            product.options.append(
                ProductOption(kind=option["kind"], code=option["code"], **values)
            )
            changed = True
    for key, option in existing.items():
        if key not in keep:
            product.options.remove(option)
            changed = True
    return changed


def _apply_product(
    session: AnySession,
    doc: dict[str, Any],
    currency: str,
    hidden_before: datetime | None,
    row_when_asked: AsRead | None,
) -> str:
    values = product_values(doc, currency)
    doc_id = doc["_id"]
    outcome = _already_written(
        session, Product, doc, values["published"], hidden_before, row_when_asked
    )
    if outcome is not None:
        return outcome
    values.update(_edit_written(doc))
    options = values.pop("options")
    collection_slug = values.pop("collection_slug")
    collection_id = None
    if collection_slug is not None:
        collection_id = session.scalar(
            select(Collection.id).where(Collection.slug == collection_slug)
        )
        if collection_id is None:
            raise NotInTheShopYetError(f"collection {collection_slug!r} is not in the shop")
    values["collection_id"] = collection_id

    loading = (selectinload(Product.options), selectinload(Product.inventory))
    product = session.scalar(select(Product).where(Product.external_id == doc_id).options(*loading))
    outcome = "unchanged"
    if product is None:
        product = session.scalar(
            select(Product)
            .where(Product.slug == values["slug"], Product.external_id.is_(None))
            .options(*loading)
        )
    _check_slug(session, Product, values["slug"], product, doc_id)
    if product is None:
        product = Product(external_id=doc_id, **values)
        session.add(product)
        outcome = "created"
    elif product.external_id is None:
        product.external_id = doc_id
        outcome = "updated"
    if outcome != "created" and _set(product, values):
        outcome = "updated"
    if _sync_options(product, options) and outcome == "unchanged":
        outcome = "updated"
    stocked = {row.variant_key for row in product.inventory}
    for key in _variant_keys(options):
        if key not in stocked:
            product.inventory.append(Inventory(variant_key=key, stock_level=0))
    return outcome


def sync_document(
    session: AnySession,
    doc: dict[str, Any],
    *,
    currency: str = DEFAULT_CURRENCY,
    hidden_before: datetime | None = None,
    row_when_asked: AsRead | None = None,
) -> str:
    """Write one document in its own transaction (committed here) and say what happened:
    ``created``, ``updated``, ``unchanged``, ``older`` (the shop holds a later edit of it,
    written meanwhile: nothing is written), or ``ignored`` (a draft). Raises
    :class:`InvalidDocumentError` (nothing written) for a document that can't be used, and
    :class:`SameSecondError` for one the shop holds another edit of that second of (see
    :func:`_already_written`; ``row_when_asked``: the row as it was before Sanity was
    asked for ``doc``).

    A second host inserting the same document at the same moment makes the unique
    constraints refuse one insert: that one is retried once as an update.
    """
    if not isinstance(doc, dict):
        raise InvalidDocumentError("not a document")
    doc_id = doc.get("_id")
    if isinstance(doc_id, str) and doc_id.startswith(DRAFT_PREFIX):
        return "ignored"
    apply = _apply_product if doc.get("_type") == "product" else None
    for attempt in (1, 2):
        try:
            if apply is None:
                outcome = _apply_collection(session, doc, hidden_before, row_when_asked)
            else:
                outcome = apply(session, doc, currency, hidden_before, row_when_asked)
            session.commit()
            return outcome
        except (IntegrityError, _WrittenMeanwhileError):
            session.rollback()
            if attempt == 2:
                raise
        except Exception:
            session.rollback()
            raise
    raise AssertionError("unreachable")


def unpublish(
    session: AnySession,
    doc_id: str,
    *,
    written_before: datetime | None = None,
) -> bool:
    """Hide the product (or collection) kept for this Sanity document; never deletes (orders
    refer to it). True if it was published until now. Commits.

    Only a row not written since the shop decided to hide it (``written_before``: the hourly
    sync's listing, by the row's own write time): the webhook wrote it meanwhile."""
    changed = 0
    for model in (Product, Collection):
        stmt = update(model).where(model.external_id == doc_id, model.published.is_(True))
        if written_before is not None:
            stmt = stmt.where(model.updated_at < written_before)
        result = session.execute(
            stmt.values(published=False).execution_options(synchronize_session="fetch")
        )
        changed += result.rowcount or 0
    session.commit()
    return changed > 0


def unpublish_deleted(session: AnySession, doc_id: str, *, asked_at: datetime) -> bool:
    """Sanity, asked at ``asked_at``, no longer has the document: hide the product (or
    collection) kept for it, and keep the deletion as its last edit, stamped with the second
    Sanity was asked in (as Sanity stamps) and :data:`DELETED_REVISION`. A copy edited before
    that, whose answer comes late (an applier's, an hourly sync's page), is then older and not
    written; one edited after it (the piece restored in the studio) is. True if it was
    published until now. Commits.

    Only a row whose edit is stamped before the second Sanity was asked in: one edited after
    Sanity was asked was restored meanwhile, and its webhook wrote it. One edited within that
    second, before Sanity was asked or after, can't be told apart:
    :class:`DeletedInTheSameSecondError`, nothing hidden."""
    deleted_at = asked_at.replace(microsecond=0)
    hidden = False
    for model in (Product, Collection):
        row_id = session.scalar(select(model.id).where(model.external_id == doc_id))
        if row_id is None:
            continue
        take_turns_on_sqlite(session, model, row_id)
        on_sale, written, written_revision = session.execute(
            select(model.published, model.source_updated_at, model.source_revision)
            .where(model.id == row_id)
            .with_for_update()
        ).one()
        if written is not None and written >= deleted_at:
            if written_revision == DELETED_REVISION or written > asked_at:
                continue  # deleted in that second already, or restored after Sanity was asked
            session.rollback()
            raise DeletedInTheSameSecondError(
                f"gone when asked at {asked_at.isoformat()}, in the second of the edit the "
                f"shop holds (revision {written_revision}): left to Sanity's next answer"
            )
        session.execute(
            update(model)
            .where(model.id == row_id)
            .values(published=False, source_updated_at=deleted_at, source_revision=DELETED_REVISION)
            .execution_options(synchronize_session="fetch")
        )
        hidden = hidden or on_sale
    session.commit()
    return hidden


def _sync_many(
    session: AnySession,
    docs: Iterable[dict[str, Any]],
    kind: str,
    report: SyncReport,
    currency: str,
    hidden_before: datetime,
    rows: dict[str, AsRead],
) -> set[str]:
    """Sync each document; returns the ids listed (drafts aside), bad ones included, so a
    piece whose document is only malformed for now is kept as it is, not unpublished.
    ``rows``: the rows as they were read before the listing was asked for."""
    seen: set[str] = set()
    for doc in docs:
        doc_id = doc.get("_id") if isinstance(doc, dict) else None
        label = doc_id if isinstance(doc_id, str) else "(no _id)"
        if isinstance(doc_id, str):
            if doc_id.startswith(DRAFT_PREFIX):
                continue
            seen.add(doc_id)
        if isinstance(doc, dict) and doc.get("_type") != kind:
            reason = f"_type is {doc.get('_type')!r}, not {kind!r}"
            report.skipped.append(Skipped(label, reason))
            logger.warning("Sanity document %s skipped: %s", label, reason)
            continue
        try:
            outcome = sync_document(
                session,
                doc,
                currency=currency,
                hidden_before=hidden_before,
                row_when_asked=rows.get(doc_id) if isinstance(doc_id, str) else None,
            )
        except InvalidDocumentError as error:
            report.skipped.append(Skipped(label, error.reason))
            logger.warning("Sanity document %s skipped: %s", label, error.reason)
            continue
        except Exception as error:
            report.skipped.append(
                Skipped(label, f"could not be written ({error.__class__.__name__})")
            )
            logger.exception("Sanity document %s could not be written", label)
            continue
        report.count(kind, outcome)
    return seen


def _rows_as_read(session: AnySession, model: type) -> dict[str, AsRead]:
    """Every row kept for a Sanity document as it is now (:data:`AsRead`), by the document's
    id: read before the listing is asked for, a row still so when its copy comes was written
    before Sanity listed that copy."""
    rows = session.execute(
        select(
            model.external_id, model.source_updated_at, model.source_revision, model.updated_at
        ).where(model.external_id.is_not(None))
    ).all()
    session.commit()
    return {
        doc_id: (edited_at, revision, changed_at)
        for doc_id, edited_at, revision, changed_at in rows
    }


def _unpublish_missing(
    session: AnySession,
    model: type,
    seen: set[str],
    kind: str,
    report: SyncReport,
    listing_began: datetime,
    *,
    allow_mass_unpublish: bool = False,
) -> None:
    """Unpublish what Sanity's listing no longer has. Not a row written since shortly before
    the listing began: the webhook wrote it meanwhile (a piece just launched, whose id the
    listing, in id order, had already passed), so Sanity had it then. The margin allows for
    the writing host's clock; the next sync looks at it again.

    Nothing at all when that is more than ``MOST_UNPUBLISHED_AT_ONCE`` of the rows on sale,
    unless ``allow_mass_unpublish``: Sanity can answer a complete listing without them (a read
    token whose role lost access to the type, a dataset being restored), and one run took the
    whole catalogue off sale. It is noted in ``report.held_back`` for the caller to say."""
    written_before = listing_began - LISTING_CLOCK_MARGIN
    listed = session.scalars(
        select(model.external_id).where(
            model.external_id.is_not(None),
            model.published.is_(True),
            model.updated_at < written_before,
        )
    )
    missing = [doc_id for doc_id in listed if doc_id not in seen]
    if not missing:
        return
    if not allow_mass_unpublish:
        on_sale = session.scalar(
            select(func.count())
            .select_from(model)
            .where(model.external_id.is_not(None), model.published.is_(True))
        )
        if len(missing) > (on_sale or 0) * MOST_UNPUBLISHED_AT_ONCE:
            held = HeldBack(kind, len(missing), on_sale or 0)
            report.held_back.append(held)
            logger.warning("%s: none unpublished (more than half of those on sale)", held)
            return
    for doc_id in missing:
        if unpublish(session, doc_id, written_before=written_before):
            report.count(kind, "unpublished")
            logger.info("%s %s is no longer in Sanity: unpublished", kind, doc_id)


def sync_all(
    session: AnySession,
    collections: Iterable[dict[str, Any]],
    products: Iterable[dict[str, Any]],
    *,
    currency: str = DEFAULT_CURRENCY,
    allow_mass_unpublish: bool = False,
) -> SyncReport:
    """Sync every collection, then every product. The iterables may be lazy (pages fetched
    as they are read): if one raises, the error propagates and nothing is unpublished, since
    only a complete listing says what Sanity no longer has. More than half of the pieces (or
    collections) on sale missing from it are not unpublished without ``allow_mass_unpublish``
    (``report.held_back``). The rows are read first, so a copy listed of another edit of the
    same second as the row's is written over it only if nobody wrote the row since (the
    listing was then read after it); one written meanwhile is skipped with its reason, and
    the next change or run settles it."""
    report = SyncReport()
    listing_began = utcnow()
    settled_before = listing_began - LISTING_CLOCK_MARGIN
    collection_rows = _rows_as_read(session, Collection)
    product_rows = _rows_as_read(session, Product)
    collection_ids = _sync_many(
        session, collections, "collection", report, currency, settled_before, collection_rows
    )
    product_ids = _sync_many(
        session, products, "product", report, currency, settled_before, product_rows
    )
    allow = allow_mass_unpublish
    _unpublish_missing(
        session, Product, product_ids, "product", report, listing_began, allow_mass_unpublish=allow
    )
    _unpublish_missing(
        session,
        Collection,
        collection_ids,
        "collection",
        report,
        listing_began,
        allow_mass_unpublish=allow,
    )
    return report
