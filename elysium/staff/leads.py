"""Bespoke commissions as staff see them: the list (status tabs, search, assignee, pages) and
one lead with what the shopper sent, its status, assignee, notes and timeline.

The list is one URL with two renderings: the page for a browser, the results for htmx, which
also learns the list's URL (``HX-Push-Url``). The lead's forms answer htmx with the part of the
page they change and the timeline out of band; without JavaScript they redirect back to the
lead (or show it again with what to fix). The rules are in ``services.staff_leads``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
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
    url_for,
)
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, SearchField, SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import NumberRange, Optional

from elysium.extensions import db
from elysium.htmx import fragments, is_htmx, notice, render
from elysium.models.users import User
from elysium.services import bespoke, quotes, staff_leads
from elysium.services.staff_leads import (
    ANYONE,
    ME,
    NOTE_MAX_LENGTH,
    UNASSIGNED,
    LeadActionError,
    LeadFilters,
    NoteError,
    Sort,
    Tab,
)
from elysium.staff.forms import REQUEST_KEY, SEND_AGAIN, new_request_key
from elysium.web.configurator import CONFIGURATION_FIELDS
from elysium.web.forms import WholeNumberField, searchable

bp = Blueprint("leads", __name__)

MAX_PAGE = 10_000


def _assignee_choices(staff: list[User]) -> list[SelectChoice]:
    return [
        SelectChoice(ANYONE, "Anyone"),
        SelectChoice(UNASSIGNED, "Nobody yet"),
        SelectChoice(ME, "Me"),
        *(SelectChoice(str(person.id), person.display_name) for person in staff),
    ]


class LeadFilterForm(FlaskForm):
    """The list's filters, from the query string: a value that can't be used is ignored,
    with a note saying so."""

    class Meta:
        csrf = False

    tab = SelectField(
        "Tab", choices=[SelectChoice(t.value, t.label) for t in Tab], default=Tab.NEW.value
    )
    q = SearchField("Search", description="Reference (B00042), name, email or words of the idea")
    assignee = SelectField("Assigned to", default=ANYONE)
    sort = SelectField(
        "Sort by", choices=[SelectChoice(s.value, s.label) for s in Sort], default=Sort.NEWEST.value
    )
    page = WholeNumberField("Page", validators=[Optional(), NumberRange(1, MAX_PAGE)])

    def __init__(self, formdata: Mapping, staff: list[User]):
        super().__init__(formdata=formdata)
        self.assignee.choices = _assignee_choices(staff)

    def to_filters(self) -> tuple[LeadFilters, list[str]]:
        self.validate()
        notes = []
        for choice in (self.tab, self.assignee, self.sort):
            if choice.errors:
                raw = searchable(choice.raw_data[0]) if choice.raw_data else ""
                notes.append(f"We ignored the unknown {choice.label.text.lower()} “{raw}”.")
                choice.data, choice.errors = choice.default, []
        if self.page.errors:
            self.page.data, self.page.errors = None, []
        self.q.data = searchable(self.q.data or "")
        filters = LeadFilters(
            tab=Tab(self.tab.data or Tab.NEW),
            q=self.q.data,
            assignee=self.assignee.data or ANYONE,
            sort=Sort(self.sort.data or Sort.NEWEST),
            page=self.page.data or 1,
        )
        return filters, notes


class StatusForm(FlaskForm):
    """A move: the button pressed names the status (``to``); ``seen`` is the status the page
    showed and ``newest_seen`` its newest quote, so a lead someone else moved or quoted again
    meanwhile is not moved on what the page said."""

    seen = HiddenField()
    newest_seen = HiddenField()
    status_note = TextAreaField(
        "Note for the timeline",
        description="Optional; to mark a commission won, say how the deposit was paid.",
    )


class AssignForm(FlaskForm):
    """``seen`` is who had the commission when the page was drawn ("" for nobody)."""

    assignee = SelectField("Assigned to", validate_choice=False)
    seen = HiddenField()


class NoteForm(FlaskForm):
    note = TextAreaField(
        "Internal note", description="Only staff see notes; the shopper never does."
    )
    # Drawn with the form: the same form sent twice is one note.
    request_key = HiddenField(validators=REQUEST_KEY, default=new_request_key)


def filter_args(filters: LeadFilters, **changes: Any) -> dict[str, str]:
    """The filters as a query string, defaults left out; ``None`` drops a value."""
    args = {
        "tab": filters.tab.value,
        "q": filters.q,
        "assignee": filters.assignee,
        "sort": filters.sort.value,
        "page": str(filters.page),
    }
    args.update({name: "" if value is None else str(value) for name, value in changes.items()})
    defaults = {"tab": Tab.NEW.value, "sort": Sort.NEWEST.value, "page": "1"}
    return {name: value for name, value in args.items() if value and value != defaults.get(name)}


@bp.context_processor
def _labels() -> dict[str, Any]:
    return {
        "lead_status_label": staff_leads.status_label,
        "lead_labels": bespoke.labels,
        "lead_move_label": staff_leads.MOVE_LABELS.get,
        "lead_note_max_length": NOTE_MAX_LENGTH,
        "lead_piece_url": _piece_url,
        "lead_tel": _tel,
    }


def _piece_url(lead: Any) -> str:
    """The piece the shopper started from, in the configuration they had chosen."""
    chosen = lead.configuration if isinstance(lead.configuration, dict) else {}
    args = {
        name: str(value)
        for name, value in chosen.items()
        if name in CONFIGURATION_FIELDS and isinstance(value, str | int)
    }
    return url_for("shop.product", slug=lead.product.slug, **args)


def _tel(phone: str) -> str:
    """A phone number as a tel: link wants it: a leading + and the digits."""
    digits = "".join(char for char in phone if char.isdigit())
    return ("+" if phone.strip().startswith("+") else "") + digits


def _actor() -> dict[str, Any]:
    return {"actor": current_user.email, "actor_user_id": current_user.id}


@bp.get("/leads", endpoint="list")
def lead_list() -> Response:
    staff = staff_leads.staff_members(db.session)
    form = LeadFilterForm(request.args, staff)
    filters, notes = form.to_filters()
    listing = staff_leads.lead_list(db.session, filters, me=current_user.id)
    shown = replace(filters, page=listing.page)

    def list_url(**changes: Any) -> str:
        return url_for("staff.leads.list", **filter_args(shown, **changes))

    response = render(
        "staff/leads/list.html",
        "staff/leads/_results.html",
        form=form,
        listing=listing,
        filters=shown,
        notes=notes + listing.notes,
        tabs=list(Tab),
        list_url=list_url,
    )
    if is_htmx():
        response.headers["HX-Push-Url"] = list_url()
    return response


def _detail_or_404(lead_id: int) -> staff_leads.LeadDetail:
    return staff_leads.lead_detail(db.session, lead_id) or abort(404)


def _forms(detail: staff_leads.LeadDetail, **forms: FlaskForm) -> dict[str, Any]:
    """The lead's forms: the ones given (as sent, with their errors), fresh ones otherwise."""
    lead = detail.lead
    status_form = forms.get("status_form") or StatusForm(formdata=None)
    status_form.seen.data = lead.status.value  # a retry after a 409 is against what is shown
    status_form.newest_seen.data = quotes.newest_quote_mark(lead)
    assign_form = forms.get("assign_form") or AssignForm(
        formdata=None, assignee=str(lead.assigned_to_id or "")
    )
    assign_form.seen.data = str(lead.assigned_to_id or "")  # a retry: against what is shown
    assign_form.assignee.choices = [SelectChoice("", "Nobody")] + [
        SelectChoice(str(person.id), person.display_name) for person in detail.staff
    ]
    return {
        "status_form": status_form,
        "assign_form": assign_form,
        "note_form": forms.get("note_form") or NoteForm(formdata=None),
    }


def _detail_page(lead_id: int, status: int = 200, **context: Any) -> Response:
    detail = _detail_or_404(lead_id)
    forms = {name: context.pop(name) for name in list(context) if name.endswith("_form")}
    response = make_response(
        render_template(
            "staff/leads/detail.html",
            detail=detail,
            lead=detail.lead,
            **_forms(detail, **forms),
            **context,
        ),
        status,
    )
    response.vary.add("HX-Request")
    return response


@bp.get("/leads/<int:lead_id>", endpoint="detail")
def lead_detail(lead_id: int) -> Response:
    return _detail_page(lead_id)


def _answer(
    lead_id: int, part: str, message: str, *, status: int = 200, **context: Any
) -> Response:
    """After an action: htmx gets the part of the page it changed, the timeline out of band
    and a message; a browser goes back to the lead (or, refused, sees it again)."""
    error = status >= 400
    if not is_htmx():
        if error:
            return _detail_page(lead_id, status, **context, **{f"{part}_error": message})
        flash(message)
        response = redirect(
            url_for("staff.leads.detail", lead_id=lead_id, _anchor=f"lead-{part}"), 303
        )
        response.vary.add("HX-Request")
        return response
    detail = _detail_or_404(lead_id)
    forms = {name: context.pop(name) for name in list(context) if name.endswith("_form")}
    full = {"detail": detail, "lead": detail.lead, **_forms(detail, **forms), **context}
    full["oob"] = True
    full[f"{part}_error"] = message if error else ""
    return fragments(
        render_template(f"staff/leads/_{part}.html", **full),
        render_template("staff/leads/_timeline.html", **full),
        notice(message, error=error),
        status=status,
    )


@bp.post("/leads/<int:lead_id>/status", endpoint="move")
def move(lead_id: int) -> Response:
    form = StatusForm()
    if not form.validate_on_submit():
        abort(400)
    to = request.form.get("to", "")
    try:
        staff_leads.change_status(
            db.session,
            lead_id,
            seen=form.seen.data or "",
            newest_seen=form.newest_seen.data or "",
            to=to,
            note=form.status_note.data or "",
            **_actor(),
        )
    except LookupError:
        abort(404)
    except NoteError as error:
        db.session.rollback()
        form.status_note.errors = [error.errors["note"]]
        return _answer(lead_id, "status", error.errors["note"], status=422, status_form=form)
    except LeadActionError as error:
        db.session.rollback()
        return _answer(lead_id, "status", error.message, status=error.status, status_form=form)
    db.session.commit()
    label = staff_leads.status_label(staff_leads.LeadStatus(to)).lower()
    return _answer(lead_id, "status", f"The commission is now {label}.")


@bp.post("/leads/<int:lead_id>/assignee", endpoint="assign")
def assign(lead_id: int) -> Response:
    form = AssignForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        event = staff_leads.assign(
            db.session, lead_id, form.assignee.data or "", seen=form.seen.data, **_actor()
        )
    except LookupError:
        abort(404)
    except LeadActionError as error:
        db.session.rollback()
        return _answer(lead_id, "assign", error.message, status=error.status)
    db.session.commit()
    return _answer(lead_id, "assign", event.note if event else "Nothing changed.")


@bp.post("/leads/<int:lead_id>/notes", endpoint="add_note")
def add_note(lead_id: int) -> Response:
    form = NoteForm()
    if not form.validate_on_submit():
        # Only the form's key can be wrong (not a form this shop drew): the words typed stay,
        # under a key of their own for the next try.
        form.request_key.data = new_request_key()
        form.note.errors = [SEND_AGAIN]
        return _answer(lead_id, "note", SEND_AGAIN, status=422, note_form=form)
    try:
        staff_leads.add_note(
            db.session,
            lead_id,
            form.note.data or "",
            request_key=form.request_key.data or "",
            **_actor(),
        )
    except LookupError:
        abort(404)
    except NoteError as error:
        db.session.rollback()
        form.note.errors = [error.errors["note"]]
        return _answer(lead_id, "note", error.errors["note"], status=422, note_form=form)
    db.session.commit()
    return _answer(lead_id, "note", "Note added.")
