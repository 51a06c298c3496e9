"""Bespoke: the shopper asks for a piece of their own (the house follows it up as a lead)."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from elysium.bespoke.forms import BespokeForm
from elysium.extensions import db
from elysium.htmx import is_htmx, personal_pages
from elysium.models.engagement import BespokeLead
from elysium.services import bespoke
from elysium.services.bespoke import StartingPiece
from elysium.web import just_sent
from elysium.web.commits import committed_with_retry
from elysium.web.throttle import Budget

bp = Blueprint("bespoke", __name__, url_prefix="/bespoke")
personal_pages(bp)

THANKS = "bespoke_thanks"
TAKE_A_MOMENT = (
    "Thank you for your patience: please take a moment to read your request over, "
    "then send it again."
)
SUBMISSIONS_PER_HOUR = 5
# Requests sent (saved, or a robot thanked) per address: refusals while correcting a field
# are given back.
SENT_REQUESTS = Budget("bespoke-sent", f"{SUBMISSIONS_PER_HOUR}/hour")


def _page(form: BespokeForm, piece: StartingPiece | None, status: int = 200) -> Response:
    on = bespoke.today()
    return make_response(
        render_template(
            "bespoke/form.html",
            form=form,
            piece=piece,
            earliest=on,
            latest=bespoke.latest_wanted_by(on),
        ),
        status,
    )


def _posted_piece(form: BespokeForm) -> StartingPiece | None:
    return bespoke.starting_piece_from(db.session, form.piece.data)


def _keep_fill_time(form: BespokeForm) -> None:
    form.started.data = bespoke.fill_token_to_keep(form.started.data)


def _when_limited(seconds: int) -> Response:
    """A 429 that shows the form again with everything typed."""
    form = BespokeForm()
    _keep_fill_time(form)
    when = f"{seconds} seconds" if seconds < 90 else f"{-(-seconds // 60)} minutes"
    form.form_errors.append(
        f"We have had several requests from here in the last hour. Please send yours again "
        f"in {when}: everything you typed is still here."
    )
    response = _page(form, _posted_piece(form), 429)
    response.headers["Retry-After"] = str(seconds)
    return response


@bp.get("")
def form() -> Response:
    """The form; ``?from=<slug>&metal=…&diamond=…`` starts from a piece (ignored if unknown)."""
    piece = bespoke.starting_piece(db.session, request.args.get("from", ""), request.args)
    data: dict[str, str] = {}
    if piece:
        data["piece_type"] = piece.product.category.value
        if piece.choices["metal"] in bespoke.METAL_PREFERENCES:
            data["metal"] = piece.choices["metal"]
    if current_user.is_authenticated:
        full_name = f"{current_user.first_name} {current_user.last_name}".strip()
        data.update(name=full_name, email=current_user.email)
    form = BespokeForm(data=data)
    form.started.data = bespoke.fill_token()
    form.piece.data = piece.token if piece else ""
    return _page(form, piece)


@bp.post("")
def submit() -> Response:
    """Saved: 303 to the thank-you page (only sent requests count towards the hourly limit,
    ``SENT_REQUESTS``: counted first, given back otherwise). Refused: the page again (422),
    everything typed kept."""
    if (seconds := SENT_REQUESTS.take()) is not None:
        return _when_limited(seconds)
    response, counts = _submitted()
    if not counts:
        SENT_REQUESTS.give_back()
    return response


def _submitted() -> tuple[Response, bool]:
    """The answer to the form sent, and whether it counts as a request sent."""
    form = BespokeForm()
    piece = _posted_piece(form)
    form.validate_on_submit()  # the CSRF token; the rules are the service's
    if form.homepage.data:
        # Only a robot fills in the hidden field: it is thanked, and nothing is saved.
        just_sent.keep(THANKS, {"lead_id": None})
        return redirect(url_for("bespoke.thanks"), 303), True
    data = form.request_data(piece)
    errors = bespoke.problems(data)
    too_fast = bespoke.filled_too_fast(form.started.data)
    if not errors and not too_fast:
        user_id = current_user.id if current_user.is_authenticated else None
        nonce = bespoke.fill_nonce(form.started.data)
        lead, new = committed_with_retry(
            lambda: bespoke.submit_once(db.session, data, user_id=user_id, form_nonce=nonce)
        )
        just_sent.keep(THANKS, {"lead_id": lead.id})
        return redirect(url_for("bespoke.thanks"), 303), new
    for name, message in errors.items():
        form[name].errors = [message]
    if too_fast:
        form.form_errors.append(TAKE_A_MOMENT)
    _keep_fill_time(form)
    return _page(form, piece, 422), False


@bp.post("/check")
def check() -> Response:
    """One field, checked as the shopper leaves it (htmx): its message (422) or none (200)."""
    name = request.args.get("field", "")
    if name not in bespoke.FIELDS:
        return make_response("", 404)
    form = BespokeForm()
    if not is_htmx():
        return redirect(url_for("bespoke.form"), 303)
    message = bespoke.check(name, form[name].data)
    return make_response(
        render_template("bespoke/_check.html", field_id=form[name].id, message=message or ""),
        422 if message else 200,
    )


@bp.get("/thanks")
def thanks() -> Response:
    """The request this browser just sent (``web.just_sent``): after a while, the form. One
    sent signed in is shown to that account alone: the browser may be a shared computer's,
    its session ended on another device (signed out everywhere) and its next user a guest."""
    # Who is signed in, first: a session ended elsewhere is cleared as it is found.
    signed_in = current_user.id if current_user.is_authenticated else None
    sent = just_sent.shown(THANKS)
    if sent is None:
        return redirect(url_for("bespoke.form"), 303)
    lead = db.session.get(BespokeLead, sent["lead_id"]) if sent.get("lead_id") else None
    if lead is not None and lead.user_id is not None and lead.user_id != signed_in:
        return redirect(url_for("bespoke.form"), 303)
    return make_response(
        render_template("bespoke/thanks.html", lead=lead, **(bespoke.labels(lead) if lead else {}))
    )
