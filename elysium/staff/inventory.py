"""Stock as staff see it: every variant, edited inline, with its movements.

Each row's form saves through :func:`elysium.services.stock_admin.apply_edit`. htmx swaps the
row (422 to fix the input, 409 when the row changed meanwhile, either with what was typed
kept); without JavaScript the form posts, and the browser goes back to the list it came from,
or to the variant's page with the message when the edit was refused.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

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
from wtforms import HiddenField, StringField, ValidationError

from elysium.extensions import db
from elysium.house_time import HOUSE_TIME
from elysium.htmx import fragments, is_htmx, notice, render
from elysium.ids import as_id
from elysium.models.inventory import StockReason
from elysium.services import stock_admin
from elysium.services.errors import InvalidInputError
from elysium.services.stock_admin import (
    MAX_STOCK_LEVEL,
    MAX_THRESHOLD,
    NONCE,
    NOTE_MAX_LENGTH,
    REASON_LABELS,
    STAFF_REASONS,
    StockEdit,
    StockRow,
)
from elysium.web.sign_in import safe_next

bp = Blueprint("inventory", __name__, url_prefix="/inventory")

WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")
OUT_OF_DATE = "This form is out of date: reload the page, check the row and try again."


def _whole(text: str | None, maximum: int) -> int | None:
    cleaned = (text or "").strip()
    if not WHOLE_NUMBER.fullmatch(cleaned) or int(cleaned) > maximum:
        return None
    return int(cleaned)


class StockEditForm(FlaskForm):
    """One row's edit: the new count and threshold as typed, beside the ones the form showed."""

    nonce = HiddenField()
    seen_stock = HiddenField()
    seen_threshold = HiddenField()
    stock = StringField("Count")
    threshold = StringField("Low at")
    reason = StringField("Reason")
    note = StringField("Note")
    next = HiddenField()

    def validate_nonce(self, field: HiddenField) -> None:
        if not NONCE.fullmatch(field.data or ""):
            raise ValidationError(OUT_OF_DATE)

    def validate_seen_stock(self, field: HiddenField) -> None:
        if _whole(field.data, MAX_STOCK_LEVEL) is None:
            raise ValidationError(OUT_OF_DATE)

    def validate_seen_threshold(self, field: HiddenField) -> None:
        if _whole(field.data, MAX_THRESHOLD) is None:
            raise ValidationError(OUT_OF_DATE)

    def validate_stock(self, field: StringField) -> None:
        if _whole(field.data, MAX_STOCK_LEVEL) is None:
            raise ValidationError(f"Enter a whole number from 0 to {MAX_STOCK_LEVEL:,}.")

    def validate_threshold(self, field: StringField) -> None:
        if _whole(field.data, MAX_THRESHOLD) is None:
            raise ValidationError(f"Enter a whole number from 0 to {MAX_THRESHOLD:,}.")

    def validate_reason(self, field: StringField) -> None:
        if field.data and field.data not in {reason.value for reason in STAFF_REASONS}:
            raise ValidationError("Choose one of the reasons offered.")

    def validate_note(self, field: StringField) -> None:
        if len((field.data or "").strip()) > NOTE_MAX_LENGTH:
            raise ValidationError(f"Keep the note to {NOTE_MAX_LENGTH} characters.")

    def edit(self) -> StockEdit:
        """The validated edit (call after ``validate``)."""
        return StockEdit(
            nonce=self.nonce.data,
            seen_stock=int(self.seen_stock.data.strip()),
            stock=int(self.stock.data.strip()),
            seen_threshold=int(self.seen_threshold.data.strip()),
            threshold=int(self.threshold.data.strip()),
            reason=StockReason(self.reason.data) if self.reason.data else None,
            note=(self.note.data or "").strip(),
        )


@dataclass
class RowForm:
    """What a row's form shows: the values in its fields, what it was drawn from, and why it
    was refused if it was."""

    nonce: str
    seen_stock: int
    seen_threshold: int
    stock: str
    threshold: str
    reason: str = ""
    note: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    message: str = ""
    refused: bool = False

    @classmethod
    def fresh(cls, row: StockRow, message: str = "") -> RowForm:
        """A new form for the row as it is now (a new nonce: a new edit)."""
        return cls(
            nonce=secrets.token_urlsafe(18),
            seen_stock=row.stock_level,
            seen_threshold=row.threshold,
            stock=str(row.stock_level),
            threshold=str(row.threshold),
            message=message,
        )

    @classmethod
    def posted(cls, form: StockEditForm, row: StockRow) -> RowForm:
        """The form as it was sent, to draw again with its messages. Hidden fields that make
        no sense are drawn from the row as it is now."""
        shown = cls.fresh(row)
        if NONCE.fullmatch(form.nonce.data or ""):
            shown.nonce = form.nonce.data
        seen_stock = _whole(form.seen_stock.data, MAX_STOCK_LEVEL)
        seen_threshold = _whole(form.seen_threshold.data, MAX_THRESHOLD)
        shown.seen_stock = row.stock_level if seen_stock is None else seen_stock
        shown.seen_threshold = row.threshold if seen_threshold is None else seen_threshold
        shown.stock = form.stock.data or ""
        shown.threshold = form.threshold.data or ""
        shown.reason = form.reason.data or ""
        shown.note = form.note.data or ""
        return shown


@bp.context_processor
def reason_choices() -> dict:
    return {"stock_reasons": STAFF_REASONS, "stock_reason_labels": REASON_LABELS}


def _list_url() -> str:
    return url_for("staff.inventory.list")


def _here() -> str:
    return request.full_path.rstrip("?")


@bp.get("", endpoint="list")
def stock_list() -> Response:
    choices = stock_admin.filter_choices(db.session)
    filters = stock_admin.StockFilters.parse(request.args, choices)
    rows = stock_admin.stock_rows(db.session, filters)
    return render(
        "staff/inventory/list.html",
        "staff/inventory/_results.html",
        choices=choices,
        filters=filters,
        items=[(row, RowForm.fresh(row)) for row in rows],
        return_to=_here(),
    )


def _variant_page(row: StockRow, edit: RowForm, *, return_to: str, status: int = 200) -> Response:
    before = as_id(request.args.get("before", ""))
    history, older = stock_admin.movements(db.session, row.id, before=before)
    return make_response(
        render_template(
            "staff/inventory/variant.html",
            row=row,
            items=[(row, edit)],
            movements=history,
            older=older,
            zone=HOUSE_TIME,
            return_to=return_to,
            back=safe_next(request.values.get("next"), default=_list_url()),
        ),
        status,
    )


def _movements_beside(row: StockRow, came_from: str) -> list[str]:
    """From the variant's own page, its movements drawn again (out of band): the one a save
    made shows at once beside the row it redrew. ``came_from`` is a path that
    :func:`safe_next` let through, which splits without raising."""
    page = url_for("staff.inventory.variant", inventory_id=row.id)
    if urlsplit(came_from).path != page:
        return []
    history, older = stock_admin.movements(db.session, row.id, before=None)
    return [
        render_template(
            "staff/inventory/_movements.html",
            oob=True,
            row=row,
            movements=history,
            older=older,
            zone=HOUSE_TIME,
        )
    ]


@bp.get("/<int:inventory_id>", endpoint="variant")
def variant(inventory_id: int) -> Response:
    """One variant: its row, to edit, and every movement of its stock, newest first."""
    row = stock_admin.stock_row(db.session, inventory_id) or abort(404)
    return _variant_page(row, RowForm.fresh(row), return_to=_here())


def _refused(row: StockRow, edit: RowForm, status: int, return_to: str) -> Response:
    """The row again with what was typed and why it can't be saved: for htmx the row, for a
    browser the variant's page (its form goes back to where the edit came from)."""
    edit.refused = True
    announcement = edit.message or next(iter(edit.errors.values()), "")
    if is_htmx():
        body = render_template("staff/inventory/_row.html", row=row, edit=edit, return_to=return_to)
        return fragments(body, notice(announcement, error=True), status=status)
    flash(f"Not saved: {announcement}")
    return _variant_page(row, edit, return_to=return_to, status=status)


@bp.post("/<int:inventory_id>", endpoint="edit")
def edit(inventory_id: int) -> Response:
    """Save a row: a new count (a stock movement with its reason), a new threshold, or both.

    Where the edit came from (the hidden ``next``) is read once, through :func:`safe_next`,
    before anything is saved: it is whatever the browser sent, and one that didn't parse as
    a URL (``http://[oops``) was split after the commit, answering 500 for a saved edit."""
    row = stock_admin.stock_row(db.session, inventory_id) or abort(404)
    form = StockEditForm()
    return_to = safe_next(form.next.data, default=_list_url())
    shown = RowForm.posted(form, row)
    if not form.validate():
        hidden = {"nonce", "seen_stock", "seen_threshold"}
        shown.errors = {name: errors[0] for name, errors in form.errors.items()}
        if hidden & set(shown.errors):
            shown.message = OUT_OF_DATE
        return _refused(row, shown, 422, return_to)
    try:
        message = stock_admin.apply_edit(db.session, row.id, form.edit(), actor_id=current_user.id)
    except InvalidInputError as invalid:
        db.session.rollback()
        shown.errors = dict(invalid.errors)
        return _refused(row, shown, 422, return_to)
    except stock_admin.EditConflictError as conflict:
        db.session.rollback()
        row = stock_admin.stock_row(db.session, inventory_id) or abort(404)
        if conflict.stock_level is not None:
            shown.seen_stock = conflict.stock_level
        if conflict.threshold is not None:
            shown.seen_threshold = conflict.threshold
        shown.message = conflict.message
        return _refused(row, shown, 409, return_to)
    db.session.commit()
    if is_htmx():
        row = stock_admin.stock_row(db.session, inventory_id) or abort(404)
        body = render_template(
            "staff/inventory/_row.html",
            row=row,
            edit=RowForm.fresh(row, message),
            return_to=return_to,
        )
        return fragments(body, notice(message), *_movements_beside(row, return_to))
    flash(message)
    return redirect(return_to, 303)
