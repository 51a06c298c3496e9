"""What staff do to an order: fulfil, ship, deliver, cancel and refund, one or in bulk.

Each action is a small form on the order's page (``staff/fulfilment/_actions.html``). The
views parse, call :mod:`elysium.services.fulfilment`, commit and answer: back to the order's
page (303, or ``HX-Refresh`` for htmx, since its status, timeline and actions all change),
409 with the reason for a move the order can't make, 422 with the form and what was typed.
A refund (and so cancelling a paid order) is three short units of work around Stripe's
answer, with no lock held while Stripe answers. A refund Stripe never answered is retried from
the order's page with its own key (Retry refund, or Cancel, which retries them all first).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace

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
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from elysium.errors import render_error
from elysium.extensions import db
from elysium.htmx import is_htmx
from elysium.models.orders import Order, Refund, RefundStatus
from elysium.money import format_money, parse_amount
from elysium.services import fulfilment, orders
from elysium.services.fulfilment import (
    Action,
    ActionRefusedError,
    InvalidActionError,
    RefundRequest,
    RefundsChangedError,
    Staff,
    StripeUnreachableError,
)
from elysium.staff.forms import (
    ActionForm,
    BulkForm,
    CancelForm,
    DeliverForm,
    GiveBackForm,
    PanelForm,
    RefundForm,
    ShipForm,
)

bp = Blueprint("fulfilment", __name__, url_prefix="/orders")


def _staff() -> Staff:
    return Staff(user_id=current_user.id, name=current_user.display_name)


def _order(number: str) -> Order:
    order = db.session.scalar(
        select(Order)
        .where(Order.number == number)
        .options(selectinload(Order.lines), selectinload(Order.refunds))
    )
    return order or abort(404)


# The panel's forms that are sent back with messages (``_invalid``), by their names there.
ACTION_FORMS = ("ship", "refund", "cancel", "give_back")


@dataclass(frozen=True)
class Shown:
    """What the order's page showed that the panel's actions are checked against, sent back
    by every form of the panel (``PanelForm``): the digest of its warning
    (``orders.attention_seen``) and how many refunds it listed. Neither is on the panel, so a
    panel drawn again for a form sent back to correct (422) carries what the page that was
    read showed, never the order as it is now: a warning raised or a refund made since is
    still read before the piece goes or the money does."""

    warning: str
    refunds: int

    @classmethod
    def now(cls, order: Order) -> Shown:
        return cls(orders.attention_seen(order), len(order.refunds))

    @classmethod
    def sent(cls, form: PanelForm) -> Shown:
        """As the form says; one that doesn't say (not drawn by a page of ours) is taken as
        from a page that showed no warning and no refund, so any there are now are read."""
        return cls(_seen(form), form.refunds_shown() or 0)


def actions_context(order: Order, shown: Shown | None = None, **forms) -> dict:
    """What the actions partial draws: the legal actions and a form for each, each saying
    what the page showed (``shown``; by default the order as it is)."""
    refund_form = forms.get("refund") or RefundForm(
        formdata=None, request_key=secrets.token_urlsafe(16)
    )
    cancel_form = forms.get("cancel") or CancelForm(
        formdata=None, request_key=secrets.token_urlsafe(16)
    )
    return {
        "order": order,
        "shown": shown or Shown.now(order),
        "actions": fulfilment.available(order),
        "Action": Action,
        "ship_form": forms.get("ship") or ShipForm(formdata=None),
        "deliver_form": forms.get("deliver") or DeliverForm(formdata=None),
        "cancel_form": cancel_form,
        "refund_form": refund_form,
        "give_back_form": forms.get("give_back") or GiveBackForm(formdata=None),
        "refundable": fulfilment.refundable_amount(order),
        "pending_refunds": fulfilment.pending_refunds(order),
        "not_accepted": fulfilment.payment_not_accepted(order),
        "cancel_does": fulfilment.what_cancel_does(order),
        "held_after_it_ended": fulfilment.held_after_it_ended(order),
        "restockable": fulfilment.restockable(order),
        "restock_values": forms.get("restock_values") or {},
        **_errors_by_form(forms),
    }


def _sent(forms: dict) -> str | None:
    """The name of the form that was sent, among ``forms``."""
    return next((name for name in ACTION_FORMS if forms.get(name) is not None), None)


def _errors_by_form(forms: dict) -> dict[str, dict[str, str]]:
    """The messages of the form that was sent, beside its own fields only (several forms on
    the panel have a reason); one about anything else goes above the panel."""
    errors: dict[str, str] = dict(forms.get("errors") or {})
    sent = _sent(forms)
    by_form = {f"{name}_errors": {} for name in ACTION_FORMS}
    if sent is not None:
        fields = set(forms[sent]._fields)
        own = {k: v for k, v in errors.items() if k in fields or k.startswith("restock-")}
        by_form[f"{sent}_errors"] = own
        errors = {k: v for k, v in errors.items() if k not in own}
    general = " ".join(message for message in errors.values() if message)
    return {**by_form, "action_errors": {"": general} if general else {}}


def _done(order: Order, message: str) -> Response:
    flash(message)
    location = url_for("staff.orders.detail", number=order.number)
    if is_htmx():
        response = make_response("", 204)
        response.headers["HX-Refresh"] = "true"
        return response
    return redirect(location, 303)


def _refused(message: str) -> Response:
    db.session.rollback()
    return render_error(409, message)


def _invalid(
    order: Order, errors: dict[str, str], *, refunds_told: int | None = None, **forms
) -> Response:
    """422: the actions again, with the messages beside the fields and what was typed, and
    what the page it was sent from showed (``Shown``), not the order as it is now: only the
    panel is drawn (htmx swaps it alone; without JavaScript ``refused.html`` is the panel).
    ``refunds_told``: the refunds the order has now, when the message says one was made."""
    db.session.rollback()
    name = _sent(forms)
    assert name is not None
    shown = Shown.sent(forms[name])
    if refunds_told is not None:
        shown = replace(shown, refunds=refunds_told)
    context = actions_context(_order(order.number), shown, errors=errors, **forms)
    template = "staff/fulfilment/_actions.html" if is_htmx() else "staff/fulfilment/refused.html"
    response = make_response(render_template(template, **context), 422)
    response.vary.add("HX-Request")
    return response


def _seen(form: PanelForm) -> str:
    """The warning the order's page showed: a form without it (not the page's) is taken as
    having shown none, so any warning there is now is read first."""
    return form.attention_seen.data or orders.warning_digest("")


@bp.post("/<number>/fulfil")
def fulfil(number: str) -> Response:
    order = _order(number)
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        fulfilment.fulfil(db.session, order.id, _staff(), seen=_seen(form))
    except ActionRefusedError as error:
        return _refused(error.message)
    db.session.commit()
    return _done(order, f"Order {order.number} is fulfilled: ready to ship.")


@bp.post("/<number>/ship")
def ship(number: str) -> Response:
    order = _order(number)
    form = ShipForm()
    if not form.validate_on_submit():
        return _invalid(order, form.field_errors(), ship=form)
    try:
        fulfilment.ship(
            db.session,
            order.id,
            _staff(),
            carrier=form.carrier.data or "",
            tracking_number=form.tracking_number.data or "",
            notify=form.notify.data,
            seen=_seen(form),
        )
    except InvalidActionError as error:
        return _invalid(order, error.errors, ship=form)
    except ActionRefusedError as error:
        return _refused(error.message)
    db.session.commit()
    return _done(order, f"Order {order.number} is shipped.")


@bp.post("/<number>/deliver")
def deliver(number: str) -> Response:
    order = _order(number)
    form = DeliverForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        fulfilment.deliver(
            db.session, order.id, _staff(), notify=form.notify.data, seen=_seen(form)
        )
    except ActionRefusedError as error:
        return _refused(error.message)
    db.session.commit()
    return _done(order, f"Order {order.number} is delivered.")


@dataclass
class _RefundOutcome:
    done: bool
    message: str
    status: int = 200  # when not done: 409 Stripe refused, 503 Stripe unreachable


def _refund(order: Order, request_: RefundRequest) -> _RefundOutcome:
    """The three steps of a refund, each its own short unit of work."""
    refund = fulfilment.begin_refund(db.session, order.id, _staff(), request_)
    db.session.commit()
    if refund is None:
        return _RefundOutcome(True, "Nothing was left to refund.")
    return _ask_and_finish(
        order, refund, notify=refund.notify, for_cancelling=request_.for_cancelling
    )


def _ask_and_finish(
    order: Order, refund: Refund, *, notify: bool, for_cancelling: bool
) -> _RefundOutcome:
    """Steps 2 and 3 of a refund already recorded (and committed)."""
    answer = fulfilment.ask_stripe(refund, order)
    refund = fulfilment.finish_refund(
        db.session, refund.id, _staff(), answer, for_cancelling=for_cancelling
    )
    plain = fulfilment.is_plain_refund(refund) and not for_cancelling
    if refund.status is RefundStatus.SUCCEEDED and notify and plain:
        fulfilment.notify_refund(db.session, refund)
    db.session.commit()
    amount = format_money(refund.amount, refund.currency)
    if refund.status is RefundStatus.PENDING:
        return _RefundOutcome(
            False,
            f"Stripe could not be reached: the refund of {amount} is not confirmed. "
            "Try again from the order's page when Stripe is back: that same refund is asked "
            "for again, so it will never refund twice.",
            503,
        )
    if refund.status is RefundStatus.FAILED:
        return _RefundOutcome(
            False, f"Stripe refused the refund of {amount}: {refund.failure_reason}", 409
        )
    return _RefundOutcome(True, f"Refunded {amount}.")


@bp.post("/<number>/refund")
def refund(number: str) -> Response:
    order = _order(number)
    form = RefundForm()
    restock = form.restock_from(request.form, order)
    if not form.validate_on_submit() or restock is None:
        errors = form.field_errors() or {"": "Please check the pieces to put back on sale."}
        return _invalid(order, errors, refund=form, restock_values=request.form)
    amount = parse_amount(form.amount.data or "", order.currency)
    if amount is None:
        return _invalid(
            order,
            {"amount": "Enter an amount like 250 or 1,250.50."},
            refund=form,
            restock_values=request.form,
        )
    try:
        outcome = _refund(
            order,
            RefundRequest(
                amount=amount,
                reason=form.reason.data or "",
                restock=restock,
                notify=form.notify.data,
                request_key=form.request_key.data or secrets.token_urlsafe(16),
                refunds_seen=form.refunds_shown(),
            ),
        )
    except RefundsChangedError as error:
        # The message says another refund was made: the form drawn with it counts it.
        return _invalid(
            order,
            error.errors,
            refunds_told=error.refunds,
            refund=form,
            restock_values=request.form,
        )
    except InvalidActionError as error:
        return _invalid(order, error.errors, refund=form, restock_values=request.form)
    except ActionRefusedError as error:
        return _refused(error.message)
    if not outcome.done:
        return render_error(outcome.status, outcome.message)
    return _done(order, outcome.message)


@bp.post("/<number>/refunds/<int:refund_id>/retry")
def retry_refund(number: str, refund_id: int) -> Response:
    """Ask Stripe again for a refund it never answered, with that refund's own key."""
    order = _order(number)
    if not any(refund.id == refund_id for refund in order.refunds):
        abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        refund = fulfilment.refund_to_retry(db.session, order.id, refund_id)
    except ActionRefusedError as error:
        return _refused(error.message)
    db.session.commit()
    outcome = _ask_and_finish(order, refund, notify=refund.notify, for_cancelling=False)
    if not outcome.done:
        return render_error(outcome.status, outcome.message)
    if not fulfilment.is_plain_refund(refund) and fulfilment.held_after_it_ended(order):
        return _done(order, f"{outcome.message} Give it back again to settle the order.")
    if not fulfilment.is_plain_refund(refund):
        return _done(order, f"{outcome.message} Cancel the order again to finish cancelling it.")
    return _done(order, outcome.message)


def _settle_pending_refunds(order: Order) -> _RefundOutcome | None:
    """Before cancelling a paid order: retry every refund Stripe never answered, with its own
    key (whichever form is sent now). The first that is still unsure or refused stops it."""
    for pending in fulfilment.pending_refunds(order):
        refund = fulfilment.refund_to_retry(db.session, order.id, pending.id)
        db.session.commit()
        outcome = _ask_and_finish(order, refund, notify=False, for_cancelling=True)
        if not outcome.done:
            return outcome
    return None


def _refund_not_accepted(
    order: Order,
    payment: fulfilment.UnacceptedPayment,
    reason: str,
    *,
    ended: bool = False,
    notify: bool = False,
) -> _RefundOutcome | None:
    """Give back, at Stripe, what is left of a payment the shop refused, or held after the
    order ``ended`` (three short units of work); None when nothing is to be given back
    through Stripe."""
    refund = fulfilment.begin_unaccepted_refund(
        db.session, order.id, _staff(), payment, reason=reason, ended=ended, notify=notify
    )
    db.session.commit()
    if refund is None:
        return None
    return _ask_and_finish(order, refund, notify=False, for_cancelling=True)


@bp.post("/<number>/cancel")
def cancel(number: str) -> Response:
    order = _order(number)
    form = CancelForm()
    if not form.validate_on_submit():
        return _invalid(order, form.field_errors(), cancel=form)
    staff, reason, notify = _staff(), form.reason.data or "", form.notify.data
    # Read on the order that decides what the cancel does, below.
    if changed := fulfilment.cancel_changed_since(order, form.does.data or ""):
        return _refused(changed)
    try:
        if fulfilment.payment_not_accepted(order):
            payment = fulfilment.unaccepted_payment(db.session, order.id)
            outcome = _refund_not_accepted(order, payment, reason)
            if outcome is not None and not outcome.done:
                return render_error(outcome.status, f"Nothing was cancelled. {outcome.message}")
            fulfilment.cancel_not_accepted(
                db.session, order.id, staff, payment, reason=reason, notify=notify
            )
        elif order.status in fulfilment.UNPAID:
            fulfilment.cancel_unpaid(db.session, order.id, staff, reason=reason, notify=notify)
        else:
            # Checked before any money moves: a refund must never precede a refused cancel.
            fulfilment.refuse_unless(order, Action.CANCEL)
            if unsure := _settle_pending_refunds(order):
                return render_error(unsure.status, f"Nothing was cancelled. {unsure.message}")
            order = _order(number)
            if to_refund := fulfilment.refund_before_cancelling(order):
                outcome = _refund(
                    order,
                    RefundRequest(
                        amount=to_refund,
                        reason=reason,
                        notify=False,
                        request_key=form.request_key.data or secrets.token_urlsafe(16),
                        for_cancelling=True,
                    ),
                )
                if not outcome.done:
                    return render_error(outcome.status, f"Nothing was cancelled. {outcome.message}")
            fulfilment.cancel_paid(db.session, order.id, staff, reason=reason, notify=notify)
    except InvalidActionError as error:
        return _invalid(order, error.errors, cancel=form)
    except StripeUnreachableError as error:
        db.session.rollback()
        return render_error(503, error.message)
    except ActionRefusedError as error:
        return _refused(error.message)
    db.session.commit()
    return _done(order, f"Order {order.number} is cancelled.")


@bp.post("/<number>/give-back")
def give_back(number: str) -> Response:
    """Refund, through Stripe, the money the shop holds after the order ended (a payment that
    came too late, a refund that failed); the order stays as it ended."""
    order = _order(number)
    form = GiveBackForm()
    if not form.validate_on_submit():
        return _invalid(order, form.field_errors(), give_back=form)
    if not fulfilment.held_after_it_ended(order):
        return _refused(fulfilment.nothing_held(order))
    reason, notify = form.reason.data or "", form.notify.data
    try:
        payment = fulfilment.unaccepted_payment(db.session, order.id)
        outcome = _refund_not_accepted(order, payment, reason, ended=True, notify=notify)
        if outcome is not None and not outcome.done:
            return render_error(outcome.status, outcome.message)
        told = fulfilment.give_back_held_money(
            db.session, order.id, _staff(), payment, reason=reason
        )
    except InvalidActionError as error:
        return _invalid(order, error.errors, give_back=form)
    except StripeUnreachableError as error:
        db.session.rollback()
        return render_error(503, error.message)
    except ActionRefusedError as error:
        return _refused(error.message)
    db.session.commit()
    return _done(order, told)


def _bulk_again(form: BulkForm, problem: str) -> Response:
    """422: nothing was done; the orders whose tracking numbers were typed are offered again,
    with those numbers and the choices made, to select and send once more."""
    typed = [
        (name.removeprefix("tracking-"), value.strip()[:100])
        for name, value in request.form.items()
        if name.startswith("tracking-") and value.strip()
    ][:200]
    page = render_template(
        "staff/fulfilment/bulk_results.html", problem=problem, typed=typed, chosen=form, results=[]
    )
    return make_response(page, 422)


@bp.post("/bulk")
def bulk() -> Response:
    """Mark several orders fulfilled or shipped; each is checked on its own, and the page
    says what became of each."""
    form = BulkForm()
    if not form.validate_on_submit():
        return _bulk_again(form, "Choose what to do with the selected orders.")
    numbers = list(dict.fromkeys(request.form.getlist("orders")))[:200]
    if not numbers:
        return _bulk_again(form, "Select at least one order.")
    staff, results = _staff(), []
    for number in numbers:
        order = db.session.scalar(select(Order).where(Order.number == number))
        if order is None:
            results.append((number, False, "No such order."))
            continue
        try:
            if form.action.data == "fulfil":
                fulfilment.fulfil(db.session, order.id, staff, seen=None)
            else:
                fulfilment.ship(
                    db.session,
                    order.id,
                    staff,
                    carrier=request.form.get(f"carrier-{number}") or form.carrier.data or "",
                    tracking_number=request.form.get(f"tracking-{number}", ""),
                    notify=form.notify.data,
                    seen=None,
                )
        except (ActionRefusedError, InvalidActionError) as error:
            db.session.rollback()
            message = (
                error.message
                if isinstance(error, ActionRefusedError)
                else " ".join(error.errors.values())
            )
            if typed := request.form.get(f"tracking-{number}", "").strip():
                message = f"{message} (The tracking number typed was {typed}.)"
            results.append((number, False, message))
            continue
        db.session.commit()
        results.append((number, True, "Fulfilled." if form.action.data == "fulfil" else "Shipped."))
    return make_response(render_template("staff/fulfilment/bulk_results.html", results=results))
