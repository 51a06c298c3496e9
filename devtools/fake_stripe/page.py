"""The hosted "SIMULATED CHECKOUT" page: ``GET /pay/<id>`` and its ``POST /pay/<id>/<action>``
forms (pay, pay later, decline, cancel, expire, and the bank's answer to a pending payment).

What a button does, and when the webhook goes: on Stripe, the browser's redirect to the
``success_url`` and the ``checkout.session.completed`` webhook travel independently. The
shop's success page copes with either order (it polls while the order is unpaid), but a
browser without JavaScript only sees the state it lands on. So by default
(``page_waits_for_webhooks``) a button answers once the webhooks it caused have been
attempted (bounded by ``webhook_timeout``): the demo and the browser tests see "Paid" at once.
With ``page_waits_for_webhooks = False`` the button answers first and the webhooks follow,
like an API call's, so a test can exercise the "redirected before the webhook" order.
Either way the events are sent by the background webhook thread, never by the browser's
request itself.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .errors import StripeError
from .objects import clone, money
from .state import PAGE_ACTIONS, FakeStripeState
from .webhooks import Delivery

Events = list[dict[str, Any]]

ROUTES = Map(
    [
        Rule("/", methods=["GET"], endpoint="index"),
        Rule("/pay/<sid>", methods=["GET"], endpoint="page"),
        Rule("/pay/<sid>/<action>", methods=["POST"], endpoint="action"),
    ]
)


def answer(fake: FakeStripeState, request: Request) -> tuple[Response, Events]:
    """The page's answer, and the events to deliver once it is sent (none when the page has
    already waited for them)."""
    endpoint, args = ROUTES.bind_to_environ(request.environ).match()
    if endpoint == "index":
        return _index(fake), []
    if endpoint == "page":
        return _page(fake, args["sid"]), []
    return _action(fake, args["sid"], args["action"], request)


def _index(fake: FakeStripeState) -> Response:
    with fake._lock:
        rows = "".join(
            f'<li><a href="/pay/{_e(s["id"])}">{_e(s["id"])}</a> {_e(s["status"])} '
            f"{_e(s['payment_status'])} {_e(money(s['amount_total'], s['currency']))}</li>"
            for s in reversed(fake.sessions.values())
        )
    body = f"<h2>Checkout Sessions</h2><ul>{rows or '<li>None yet.</li>'}</ul>"
    return _html(_layout("Fake Stripe", body))


def _page(fake: FakeStripeState, session_id: str, notice: str = "") -> Response:
    with fake._lock:
        session = fake.sessions.get(session_id)
        if session is None:
            return _html(_layout("Not found", "<p>No such Checkout Session.</p>"), 404)
        session = clone(session)
        items = clone(fake._line_items[session_id])
        products = clone(fake._products)
        intent = clone(fake.payment_intents.get(session["payment_intent"] or "") or {})
        customer = clone(fake.customers.get(session["customer"] or "") or {})
    currency = session["currency"]
    rows = "".join(
        f"<tr><td>{_e(item['description'])}{_product_description(products, item)}</td>"
        f"<td>{item['quantity']}</td>"
        f"<td>{_e(money(item['amount_total'], currency))}</td></tr>"
        for item in items
    )
    table = (
        "<table><thead><tr><th>Item</th><th>Qty</th><th>Amount</th></tr></thead>"
        f"<tbody>{rows}</tbody><tfoot><tr><th colspan=2>Total</th>"
        f"<th>{_e(money(session['amount_total'], currency))}</th></tr></tfoot></table>"
    )
    status = session["status"]
    past_due = status == "open" and session["expires_at"] <= fake.clock()
    if status == "expired":
        state = "<p class=state>This Checkout Session has expired.</p>"
        actions = ""
    elif status == "complete" and intent.get("status") == "processing":
        state = (
            "<p class=state>Order placed: the bank payment is pending (payment_status unpaid).</p>"
        )
        actions = _button(session_id, "bank_succeeds", "Bank payment succeeds") + _button(
            session_id, "bank_fails", "Bank payment fails"
        )
    elif status == "complete" and session["payment_status"] == "paid":
        state = "<p class=state>This Checkout Session is complete: payment received.</p>"
        actions = ""
    elif status == "complete":
        state = "<p class=state>This Checkout Session is complete but the bank payment failed.</p>"
        actions = ""
    elif past_due:
        state = "<p class=state>This Checkout Session is past its expiry time.</p>"
        actions = _button(session_id, "expire", "Expire now")
    else:
        state = ""
        if intent.get("status") == "requires_payment_method" and intent.get("last_payment_error"):
            state = f"<p class=decline>{_e(intent['last_payment_error']['message'])}</p>"
        # Stripe shows the email it already knows (the session's or the customer's) and
        # does not let the customer change it.
        email = session["customer_email"] or customer.get("email") or ""
        readonly = " readonly" if email else ""
        actions = (
            f'<form method="post" action="/pay/{_e(session_id)}/pay">'
            f'<label>Email <input type="email" name="email" value="{_e(email)}"'
            f"{readonly}></label> "
            '<button type="submit">Pay</button></form>'
            + _button(session_id, "pay_later", "Pay later (bank transfer)")
            + _button(session_id, "decline", "Decline (card declined)")
            + _button(session_id, "cancel", "Cancel")
            + _button(session_id, "expire", "Expire now")
        )
    notice_html = f"<p class=notice>{_e(notice)}</p>" if notice else ""
    body = (
        f"<p>Session <code>{_e(session_id)}</code> · status <b>{_e(status)}</b> · "
        f"payment_status <b>{_e(session['payment_status'])}</b></p>"
        f"{notice_html}{state}{table}<div class=actions>{actions}</div>"
    )
    return _html(_layout("Checkout", body))


def _action(
    fake: FakeStripeState, session_id: str, action: str, request: Request
) -> tuple[Response, Events]:
    with fake._lock:
        session = fake.sessions.get(session_id)
        if session is None:
            return _html(_layout("Not found", "<p>No such Checkout Session.</p>"), 404), []
        cancel_url = session["cancel_url"]
    if action == "cancel":
        if cancel_url:
            return _redirect(cancel_url), []
        return _page(fake, session_id, "No cancel_url was given."), []
    if action not in PAGE_ACTIONS:
        raise NotFound()
    try:
        events = fake._transition(session_id, action, request.form.get("email") or None)
    except StripeError as exc:
        return _page(fake, session_id, str(exc)), []
    later: Events = events
    deliveries: list[Delivery] = []
    timed_out = False
    if fake.page_waits_for_webhooks:
        later = []
        batch = fake._hold(events)
        if batch is not None:
            fake._release_batch(batch)
            timed_out = not batch.wait(fake.webhook_timeout + 5)
            deliveries = list(batch.deliveries)
    if action in ("pay", "pay_later"):
        success_url = fake.session(session_id)["success_url"]
        if success_url:
            return _redirect(success_url.replace("{CHECKOUT_SESSION_ID}", session_id)), later
    notices = [
        f"Webhook delivery failed: {d.type} → {d.status or d.error}" for d in deliveries if not d.ok
    ]
    if timed_out:
        notices.append("Webhook delivery is still in progress.")
    return _page(fake, session_id, " ".join(notices)), later


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _product_description(products: Mapping[str, dict[str, Any]], item: dict[str, Any]) -> str:
    product = products.get(item["price"]["product"]) or {}
    description = product.get("description")
    return f"<br><small>{_e(description)}</small>" if description else ""


def _button(session_id: str, action: str, label: str) -> str:
    return (
        f'<form method="post" action="/pay/{_e(session_id)}/{_e(action)}">'
        f'<button type="submit" name="action" value="{_e(action)}">{_e(label)}</button></form>'
    )


def _layout(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)} · SIMULATED CHECKOUT</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; }}
.banner {{ background: #b00020; color: #fff; padding: .75rem 1rem; font-weight: bold; }}
table {{ width: 100%; border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .4rem; text-align: left; }}
.actions form {{ display: inline-block; margin: .25rem .5rem .25rem 0; }}
.decline, .notice {{ color: #b00020; }}
.state {{ font-weight: bold; }}
</style></head>
<body><h1 class="banner">SIMULATED CHECKOUT — development only, no real payment</h1>
{body}
</body></html>"""


def _html(text: str, status: int = 200) -> Response:
    return Response(text, status=status, mimetype="text/html")


def _redirect(url: str) -> Response:
    response = Response("", status=303)
    response.headers["Location"] = url
    return response
