"""Staff write and send a quote on a commission: ``/staff/leads/<id>/quotes``.

The form and the lead's quotes are one partial, ``staff/leads/_quote.html``, which the lead's
page includes; ``GET`` here shows it on its own. The view parses, calls
:func:`elysium.services.quotes.send_quote`, commits and answers: back to the lead (303, or
``HX-Refresh`` for htmx: its status, timeline and quotes all change), 422 with the form as
typed, 409 for a commission that can't be quoted.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    url_for,
)
from flask_login import current_user

from elysium import house_time
from elysium.extensions import db
from elysium.htmx import is_htmx
from elysium.models.engagement import BespokeLead
from elysium.services import quotes
from elysium.web.quotes import QuoteForm

bp = Blueprint("quotes", __name__)


def _lead(lead_id: int) -> BespokeLead:
    return db.session.get(BespokeLead, lead_id) or abort(404)


def _answer(lead: BespokeLead, form: QuoteForm | None, status: int, error: str = "") -> Response:
    template = "staff/leads/_quote.html" if is_htmx() else "quotes/staff_page.html"
    html = render_template(
        template, lead=lead, quote_form=form, quote_error=error, lead_url=_lead_page(lead.id)
    )
    response = make_response(html, status)
    response.vary.add("HX-Request")
    return response


def _lead_page(lead_id: int) -> str:
    if "staff.leads.detail" in current_app.view_functions:
        return url_for("staff.leads.detail", lead_id=lead_id, _anchor="lead-quotes")
    return url_for("staff.quotes.show", lead_id=lead_id)


@bp.get("/leads/<int:lead_id>/quotes")
def show(lead_id: int) -> Response:
    return _answer(_lead(lead_id), None, 200)


@bp.post("/leads/<int:lead_id>/quotes")
def create(lead_id: int) -> Response:
    lead = _lead(lead_id)
    form = QuoteForm()
    if not form.validate_on_submit() and "csrf_token" in form.errors:
        abort(400)
    data = quotes.QuoteInput(
        description=form.description.data or "",
        price=form.price.data or "",
        deposit_percent=form.deposit_percent.data or "",
        valid_until=form.valid_until.data,
    )
    if form.valid_until.errors:
        form.valid_until.errors = ["Enter the date as shown, for example 2027-01-31."]
        return _answer(lead, form, 422)
    try:
        quote = quotes.send_quote(
            db.session,
            lead_id,
            data,
            staff_name=current_user.display_name,
            staff_user_id=current_user.id,
            today=house_time.today(),
            newest_seen=form.newest_seen.data,
        )
    except quotes.QuoteError as error:
        db.session.rollback()
        for name, message in error.errors.items():
            getattr(form, name).errors = [message]
        return _answer(_lead(lead_id), form, 422)
    except quotes.QuoteRefusedError as error:
        db.session.rollback()
        return _answer(_lead(lead_id), form, 409, error.message)
    db.session.commit()
    flash(
        f"Quote sent to {lead.email}: deposit {quotes.amounts(quote)['deposit']} "
        f"of {quotes.amounts(quote)['price']}."
    )
    if is_htmx():
        # The lead's status, timeline and quotes all change: the whole page is shown again.
        response = make_response("", 204)
        response.headers["HX-Refresh"] = "true"
        return response
    return redirect(_lead_page(lead_id), 303)
