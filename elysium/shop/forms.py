"""Reading the listing's filters and the configurator's choices from a query string."""

from __future__ import annotations

import re
from collections.abc import Mapping

from flask_wtf import FlaskForm
from markupsafe import Markup
from werkzeug.datastructures import MultiDict
from wtforms import Field, SearchField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.fields.core import UnboundField
from wtforms.validators import NumberRange, Optional

from elysium.models.catalog import Category
from elysium.money import MINOR_UNITS
from elysium.services.catalog import ShopQuery, SortOrder
from elysium.web.forms import WholeNumberField, searchable
from elysium.web.fragments import Memo

MAX_PRICE = 10_000_000
MAX_PAGE = 10_000
ALL_PIECES = "All pieces"
# How many fields' markup is kept (each is at most a few hundred bytes).
_drawn_fields = Memo[Markup](1024)


class ShopFilterForm(FlaskForm):
    """The listing's filters. Nothing here is ever an error: a bad value is ignored, with a note."""

    class Meta:
        csrf = False

        def render_field(self, field: Field, render_kw: dict) -> Markup:
            """A filter's markup follows only from the field, its value, its choices and the
            attributes asked for, so it is drawn once and kept (the listing draws seven on
            every page, the same few over and over). By then a value that was refused has
            been replaced and its error dropped (:meth:`to_query`)."""
            if field.errors or field.render_kw:
                return super().render_field(field, render_kw)  # type: ignore[misc]
            choices = getattr(field, "choices", None) or ()
            key = (
                type(field).__name__,
                field.id,
                field.name,
                field.data if isinstance(field, SelectField) else field._value(),
                tuple(sorted(render_kw.items())),
                tuple(
                    (c.value, c.label, c.optgroup, tuple(sorted(c.render_kw.items())))
                    for c in choices
                ),
            )
            draw = super().render_field  # type: ignore[misc]
            return _drawn_fields.get(key, lambda: draw(field, render_kw))

    q = SearchField("Search")
    category = SelectField("Category", default="")
    collection = SelectField("Collection", default="")
    metal = SelectField("Metal", default="")
    min_price = WholeNumberField("From", validators=[Optional(), NumberRange(0, MAX_PRICE)])
    max_price = WholeNumberField("To", validators=[Optional(), NumberRange(0, MAX_PRICE)])
    sort = SelectField(
        "Sort by",
        choices=[SelectChoice(s.value, s.label) for s in SortOrder],
        default=SortOrder.FEATURED.value,
    )
    page = WholeNumberField("Page", validators=[Optional(), NumberRange(1, MAX_PAGE)])

    def __init__(
        self,
        formdata: Mapping,
        collections: list[tuple[str, str]],
        metals: list[tuple[str, str]],
    ):
        super().__init__(formdata=formdata)
        self.category.choices = [SelectChoice("", ALL_PIECES)] + [
            SelectChoice(c.value, c.plural) for c in Category
        ]
        self.collection.choices = [SelectChoice("", "All collections")] + [
            SelectChoice(value, label) for value, label in collections
        ]
        self.metal.choices = [SelectChoice("", "Any metal")] + [
            SelectChoice(value, label) for value, label in metals
        ]

    def to_query(self) -> tuple[ShopQuery, list[str]]:
        """The validated query, and a note for every value that had to be ignored."""
        self.validate()
        notes = []
        for field in (self.category, self.collection, self.metal, self.sort):
            if field.errors:
                raw = field.raw_data[0] if field.raw_data else ""
                notes.append(f"We ignored the unknown {field.label.text.lower()} “{raw}”.")
                field.data = field.default
                field.errors = []
        for field in (self.min_price, self.max_price, self.page):
            if field.errors:
                raw = field.raw_data[0] if field.raw_data else ""
                notes.append(
                    f"We ignored “{raw}” for {field.label.text.lower()}: it isn't a valid number."
                )
                field.data = None
                field.errors = []
        min_price, max_price = self.min_price.data, self.max_price.data
        if min_price is not None and max_price is not None and min_price > max_price:
            notes.append("The price range was the wrong way round, so we swapped it.")
            min_price, max_price = max_price, min_price
            self.min_price.data, self.max_price.data = min_price, max_price
        query = ShopQuery(
            category=Category(self.category.data) if self.category.data else None,
            collection=self.collection.data or None,
            metal=self.metal.data or None,
            min_price=None if min_price is None else min_price * MINOR_UNITS,
            max_price=None if max_price is None else max_price * MINOR_UNITS,
            q=searchable(self.q.data or ""),
            sort=SortOrder(self.sort.data) if self.sort.data else SortOrder.FEATURED,
            page=self.page.data or 1,
        )
        return query, notes

    @property
    def active(self) -> bool:
        """Any filter chosen (sorting and the page are not filters): "Clear all" is offered."""
        return bool(self.category.data) or self.refined

    @property
    def refined(self) -> bool:
        """A filter besides the category: the pieces shown are only part of the category."""
        return (
            any((self.q.data, self.collection.data, self.metal.data))
            or self.min_price.data is not None
            or self.max_price.data is not None
        )

    @property
    def heading(self) -> str:
        """What the listing shows, as its heading and title say: a category, or every piece.
        Read after :meth:`to_query`, which drops an unknown category."""
        return Category(self.category.data).plural if self.category.data else ALL_PIECES


FILTERS = frozenset(
    name for name, value in vars(ShopFilterForm).items() if isinstance(value, UnboundField)
)
# Query strings of filters alone, read once per process (each form is a few kilobytes).
_read_filters = Memo[tuple[ShopFilterForm, ShopQuery, tuple[str, ...]]](1024)


# A listing's pages past this are drawn for their request alone (``worth_keeping_listing``).
KEPT_PAGES = 20
# A page number as the listing's own links write it, among those kept (``region_key``).
KEPT_PAGE = re.compile(r"[1-9][0-9]?")
# Filters whose value is anything typed (``region_key``).
FREE_FILTERS = frozenset({"q", "min_price", "max_price"})


def worth_keeping_listing(query: ShopQuery) -> bool:
    """Whether a listing may be kept for everyone: its filters name what the shop offers and
    one of its first pages. Search words and price bounds are any text or number at all: a
    stream of made-up ones would fill the shared cache and push out what shoppers ask for."""
    return (
        not query.q
        and query.min_price is None
        and query.max_price is None
        and query.page <= KEPT_PAGES
    )


def region_key(args: MultiDict[str, str]) -> tuple[tuple[str, str], ...] | None:
    """The query string as the listing's region shows it (each filter as typed, in the order
    sent: the pages' links keep it), to keep the region under; None when it holds anything
    but the filters, each once, or search words or prices (any text or number at all), or a
    value with spaces around it, so made-up parameters or values never fill a cache (a value
    the filters don't offer is noted, and not kept either: see the listing's view)."""
    items = tuple(args.items(multi=True))
    if len(items) != len(args) or any(name not in FILTERS for name, _ in items):
        return None
    if any(value != value.strip() for _, value in items):
        return None
    if any(name == "page" and not KEPT_PAGE.fullmatch(value) for name, value in items):
        return None  # "01", "+1": read as page 1, each would be kept apart
    if any(value for name, value in items if name in FREE_FILTERS):
        return None
    return items


def read_filters(
    args: MultiDict[str, str], collections: list[tuple[str, str]], metals: list[tuple[str, str]]
) -> tuple[ShopFilterForm, ShopQuery, tuple[str, ...]]:
    """The listing's filters read from ``args``: the form (to draw them), the query and the
    notes (:meth:`ShopFilterForm.to_query`). A query string of filters alone (:func:`region_key`)
    is read once per process and the same form is shown again, so it is only ever read after
    that: drawing a field changes nothing."""

    def read() -> tuple[ShopFilterForm, ShopQuery, tuple[str, ...]]:
        form = ShopFilterForm(args, collections=collections, metals=metals)
        query, notes = form.to_query()
        return form, query, tuple(notes)

    key = region_key(args)
    if key is None:
        return read()
    return _read_filters.get((key, tuple(collections), tuple(metals)), read)
