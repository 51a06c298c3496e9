"""Orders as staff see them: the list, the CSV, one order, its notes and packing slip.

The list is one URL with two renderings: the page for a browser, the results (tabs, rows,
pages) for htmx, which also learns the list's URL (``HX-Push-Url``). The tab counts refresh
on their own URL, ``/staff/orders/counts``, every 30 seconds while the browser tab is visible
(``static/js/staff.js`` asks; htmx alone can't tell visibility without eval).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    SearchField,
    SelectField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, NumberRange, Optional

from elysium.extensions import db
from elysium.htmx import fragments, htmx_redirect, is_htmx, notice, render
from elysium.models.types import utcnow
from elysium.services import fulfilment, orders, shipping, staff_orders
from elysium.services.staff_orders import NOTE_MAX_LENGTH, OrderFilters, Sort, Tab
from elysium.staff.access import not_activity
from elysium.staff.forms import REQUEST_KEY, new_request_key
from elysium.staff.fulfilment import actions_context
from elysium.web.forms import WholeNumberField, searchable

bp = Blueprint("orders", __name__)

MAX_PAGE = 10_000
# The days the order filters take: wide of any order the house has had or will have.
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(2999, 12, 31)


class OrderFilterForm(FlaskForm):
    """The list's filters, from the query string. Nothing here is an error: a value that
    can't be used is ignored, with a note saying so."""

    class Meta:
        csrf = False

    tab = SelectField(
        "Tab", choices=[SelectChoice(t.value, t.label) for t in Tab], default=Tab.TO_FULFIL.value
    )
    q = SearchField("Search", description="Order number, email, name or tracking number")
    placed_from = DateField("Placed from", validators=[Optional()])
    placed_to = DateField("Placed to", validators=[Optional()])
    sort = SelectField(
        "Sort by", choices=[SelectChoice(s.value, s.label) for s in Sort], default=Sort.NEWEST.value
    )
    page = WholeNumberField("Page", validators=[Optional(), NumberRange(1, MAX_PAGE)])

    def __init__(self, formdata: Mapping):
        super().__init__(formdata=formdata)

    def to_filters(self) -> tuple[OrderFilters, list[str]]:
        """The validated filters, and a note for every value that had to be ignored."""
        self.validate()
        notes = []
        for choice in (self.tab, self.sort):
            if choice.errors:
                notes.append(
                    f"We ignored the unknown {choice.label.text.lower()} “{_raw(choice)}”."
                )
                choice.data, choice.errors = choice.default, []
        for day in (self.placed_from, self.placed_to):
            if day.errors:
                notes.append(f"We ignored “{_raw(day)}” for {day.label.text.lower()}: not a date.")
                day.data, day.errors = None, []
            elif day.data is not None and not FIRST_DAY <= day.data <= LAST_DAY:
                # Beyond them a day's bounds in time can't be worked out (year 9999 has no
                # next day): no order was, or will be, placed then anyway.
                notes.append(
                    f"We ignored “{_raw(day)}” for {day.label.text.lower()}: "
                    f"not a date from {FIRST_DAY.year} to {LAST_DAY.year}."
                )
                day.data = None
        if self.page.errors:
            self.page.data, self.page.errors = None, []
        placed_from, placed_to = self.placed_from.data, self.placed_to.data
        if placed_from and placed_to and placed_from > placed_to:
            notes.append("The dates were the wrong way round, so we swapped them.")
            placed_from, placed_to = placed_to, placed_from
            self.placed_from.data, self.placed_to.data = placed_from, placed_to
        self.q.data = searchable(self.q.data or "")
        filters = OrderFilters(
            tab=Tab(self.tab.data or Tab.TO_FULFIL),
            q=self.q.data,
            placed_from=placed_from,
            placed_to=placed_to,
            sort=Sort(self.sort.data or Sort.NEWEST),
            page=self.page.data or 1,
        )
        return filters, notes


def _raw(field: Any) -> str:
    return searchable(field.raw_data[0]) if field.raw_data else ""


class NoteForm(FlaskForm):
    """A staff note; its length is measured by the service, after line breaks are made one
    character (a browser sends two for each)."""

    note = TextAreaField(
        "Internal note",
        validators=[DataRequired("Write the note first.")],
        description="Only staff see notes; the shopper never does.",
    )
    settles = BooleanField("This note settles what needs attention: take the warning off")
    # The warning as the page showed it (``orders.attention_seen``): drawn again without the
    # warnings (htmx swaps the form alone), the form keeps the one its page showed.
    seen = HiddenField()
    # Drawn with the form: the same form sent twice is one note.
    request_key = HiddenField(validators=REQUEST_KEY, default=new_request_key)


def filter_args(filters: OrderFilters, **changes: Any) -> dict[str, str]:
    """The filters as a query string, defaults left out; ``None`` drops a value."""
    args = {
        "tab": filters.tab.value,
        "q": filters.q,
        "placed_from": filters.placed_from.isoformat() if filters.placed_from else "",
        "placed_to": filters.placed_to.isoformat() if filters.placed_to else "",
        "sort": filters.sort.value,
        "page": str(filters.page),
    }
    args.update({name: "" if value is None else str(value) for name, value in changes.items()})
    defaults = {"tab": Tab.TO_FULFIL.value, "sort": Sort.NEWEST.value, "page": "1"}
    return {name: value for name, value in args.items() if value and value != defaults.get(name)}


def _filters() -> tuple[OrderFilterForm, OrderFilters, list[str]]:
    form = OrderFilterForm(request.args)
    filters, notes = form.to_filters()
    return form, filters, notes


def _list_context(filters: OrderFilters) -> dict[str, Any]:
    def list_url(endpoint: str = "staff.orders.list", **changes: Any) -> str:
        return url_for(endpoint, **filter_args(filters, **changes))

    return {"filters": filters, "list_url": list_url, "tabs": list(Tab)}


@bp.context_processor
def _labels() -> dict[str, Any]:
    return {
        "staff_status_label": staff_orders.status_label,
        "carrier_named": shipping.carrier_named,
        "tracking_link": shipping.tracking_link,
        "note_max_length": NOTE_MAX_LENGTH,
        "settled_by_hand": staff_orders.settled_by_hand,
    }


@bp.get("/orders", endpoint="list")
def order_list() -> Response:
    form, filters, notes = _filters()
    listing = staff_orders.order_list(db.session, filters)
    shown = replace(filters, page=listing.page)
    context = _list_context(shown)
    response = render(
        "staff/orders/list.html",
        "staff/orders/_results.html",
        form=form,
        listing=listing,
        notes=notes + listing.notes,
        **context,
    )
    if is_htmx():
        response.headers["HX-Push-Url"] = context["list_url"]()
    return response


@bp.get("/orders/counts", endpoint="counts")
@not_activity
def tab_counts() -> Response:
    """The tabs with fresh counts, for htmx; a browser is sent to the list itself. Not
    activity: the idle sign-out still comes 30 minutes after the last thing a person did."""
    _, filters, _ = _filters()
    if not is_htmx():
        response = redirect(url_for("staff.orders.list", **filter_args(filters)), 303)
        response.vary.add("HX-Request")
        return response
    counts = staff_orders.tab_counts(db.session, filters)
    return fragments(
        render_template("staff/orders/_tabs.html", counts=counts, **_list_context(filters))
    )


@bp.get("/orders.csv", endpoint="csv")
def orders_csv() -> Response:
    """Every order the filters match (all pages), streamed as the rows are read."""
    _, filters, _ = _filters()
    chunks = staff_orders.csv_chunks(db.session, filters)
    response = Response(stream_with_context(chunks), mimetype="text/csv")
    name = f"elysium-orders-{filters.tab.value}-{utcnow():%Y-%m-%d}.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _detail_or_404(number: str) -> staff_orders.OrderDetail:
    return staff_orders.order_detail(db.session, number) or abort(404)


def _detail_page(number: str, note_form: NoteForm | None = None, status: int = 200) -> Response:
    """The whole page, its warnings as they are now, which its note form says it showed."""
    detail = _detail_or_404(number)
    note_form = note_form or NoteForm(formdata=None)
    note_form.seen.data = orders.attention_seen(detail.order)
    response = make_response(
        render_template(
            "staff/orders/detail.html",
            **actions_context(detail.order),
            detail=detail,
            note_form=note_form,
        ),
        status,
    )
    response.vary.add("HX-Request")
    return response


@bp.get("/orders/<number>", endpoint="detail")
def order_detail(number: str) -> Response:
    return _detail_page(number)


@bp.post("/orders/<number>/notes", endpoint="add_note")
def add_note(number: str) -> Response:
    """An internal note on the timeline; htmx gets the form again and the new timeline."""
    order = staff_orders.order_numbered(db.session, number) or abort(404)
    form = NoteForm()
    if form.validate_on_submit():
        try:
            staff_orders.add_staff_note(
                db.session,
                order,
                form.note.data or "",
                staff_name=current_user.display_name,
                staff_user_id=current_user.id,
                settles=form.settles.data,
                seen=form.seen.data or "",
                request_key=form.request_key.data or "",
            )
        except staff_orders.NoteError as error:
            db.session.rollback()
            for name, message in error.errors.items():
                form[name].errors = [message]
        else:
            db.session.commit()
            if form.settles.data:
                return _settled(number)
            return _note_added(number, form.seen.data or "")
    if is_htmx():
        # The form alone comes back, keeping the warning its page showed (``seen``)...
        attention = []
        if form.settles.errors:
            # ...unless settling was refused: the warnings as they are now, out of band (a
            # refusal may be for a new one, which must be on screen before the next try), and
            # the form says it showed those.
            detail = _detail_or_404(number)
            form.seen.data = orders.attention_seen(detail.order)
            attention = [render_template("staff/orders/_attention.html", detail=detail, oob=True)]
        note_form = render_template("staff/orders/_note_form.html", order=order, note_form=form)
        return fragments(note_form, *attention, status=422)
    return _detail_page(number, form, 422)


def _note_added(number: str, seen: str) -> Response:
    """The note is on the timeline; htmx gets a fresh form, which keeps the warning its page
    showed (``seen``: the warnings are not drawn again)."""
    message = "Note added."
    if not is_htmx():
        flash(message)
        response = redirect(url_for("staff.orders.detail", number=number, _anchor="timeline"), 303)
        response.vary.add("HX-Request")
        return response
    detail = _detail_or_404(number)
    return fragments(
        render_template(
            "staff/orders/_note_form.html",
            order=detail.order,
            note_form=NoteForm(formdata=None, seen=seen),
        ),
        render_template("staff/orders/_timeline.html", detail=detail, oob=True),
        notice(message),
    )


def _settled(number: str) -> Response:
    """The warning is off: the whole page changes (its badges, the warning, the timeline)."""
    flash("Note added: the order needs attention no more.")
    location = url_for("staff.orders.detail", number=number, _anchor="timeline")
    response = htmx_redirect(location) if is_htmx() else redirect(location, 303)
    response.vary.add("HX-Request")
    return response


@bp.get("/orders/<number>/packing-slip", endpoint="packing_slip")
def packing_slip(number: str) -> str:
    order = staff_orders.order_numbered(db.session, number) or abort(404)
    sent = fulfilment.pieces_to_send(order)
    return render_template("staff/orders/packing_slip.html", order=order, sent=sent)
