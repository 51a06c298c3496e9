"""The forms on pages opened from an emailed link, sent over https as a browser sends them.

Over https, a form's post without a Referer naming the shop is refused as a forgery
(Flask-WTF's ``WTF_CSRF_SSL_STRICT``), and a browser sends none from a page whose
``Referrer-Policy`` is ``no-referrer``. Those pages said so to keep their secret address from
other sites: in production nobody could confirm an account, reset a password, confirm a new
email, set a new member of staff's password or pay a commission's deposit (found by review,
against gunicorn with a certificate and Chromium). The suite runs over http, where that check
is never made: these tests don't.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask

from tests.conftest import PASSWORD, ShopClient, link_in, page_text, sent_emails
from tests.support.checkout import Shop
from tests.support.staff import staff_client
from tests.test_account import ask_for_new_email, change_link
from tests.test_quotes import make_lead, quote_link
from tests.test_quotes import send as send_quote
from tests.test_staff_cli import STAFF_PASSWORD, create_staff

ORIGIN = "https://localhost"


def submit_from(client: ShopClient, page: str, data: dict, action: str | None = None):
    """Open ``page`` over https and send its form as a browser does: with a Referer unless
    the page's ``Referrer-Policy`` forbids one (``no-referrer``; every policy sends it to
    the page's own origin)."""
    shown = client.get(page, base_url=ORIGIN)
    assert shown.status_code == 200, page_text(shown)
    headers = {}
    if shown.headers.get("Referrer-Policy", "") != "no-referrer":
        headers["Referer"] = f"{ORIGIN}{page}"
    return client.post(
        action or page,
        data={"csrf_token": client.csrf_token, **data},
        headers=headers,
        base_url=ORIGIN,
    )


def test_a_new_account_is_confirmed_over_https(app: Flask, client: ShopClient) -> None:
    registered = submit_from(
        client, "/auth/register", {"email": "grace@example.com", "password": PASSWORD}
    )
    assert registered.status_code == 303
    link = link_in(sent_emails(app, "grace@example.com")[-1], "/auth/confirm/")

    confirmed = submit_from(client, link, {"password": PASSWORD})

    assert confirmed.status_code == 303, page_text(confirmed)
    assert confirmed.headers["Location"] == "/account"


def test_a_password_is_reset_over_https(app: Flask, client: ShopClient, auth) -> None:
    auth.create_user()
    assert submit_from(client, "/auth/forgot", {"email": "ada@example.com"}).status_code == 303
    link = link_in(sent_emails(app, "ada@example.com")[-1], "/auth/reset/")

    reset = submit_from(client, link, {"password": "a brand new passphrase 42"})

    assert reset.status_code == 303, page_text(reset)


def test_a_new_email_is_confirmed_over_https(app: Flask, client: ShopClient, auth) -> None:
    auth.create_user()
    auth.login()
    ask_for_new_email(client, "countess@example.com")

    confirmed = submit_from(client, change_link(app), {})

    assert confirmed.status_code == 303, page_text(confirmed)


def test_a_new_member_of_staff_sets_a_password_over_https(app: Flask, runner) -> None:
    _, link = create_staff(runner)

    done = submit_from(app.test_client(), link, {"password": STAFF_PASSWORD})

    assert done.status_code == 303, page_text(done)


def test_a_commissions_deposit_is_paid_over_https(shop: Shop, app: Flask) -> None:
    lead_id = make_lead(app)
    send_quote(staff_client(app), lead_id)
    page = urlsplit(quote_link(app)).path
    token = page.rsplit("/", 1)[1]

    to_stripe = submit_from(shop.client(), page, {}, action=f"/bespoke/quote/{token}/deposit")

    assert to_stripe.status_code == 303, page_text(to_stripe)
    assert "/pay/cs_test_" in to_stripe.headers["Location"]


def test_a_referer_that_cant_be_parsed_is_refused_as_from_another_site(
    client: ShopClient,
) -> None:
    """urllib raises on an IPv6 host left open or a port past 65535: Flask-WTF's check of
    the Referer raised with it, a 500 (found by review, from outside under gunicorn)."""
    for referer in ("http://[oops/account", f"{ORIGIN}:99999/auth/login"):
        client.get("/auth/login", base_url=ORIGIN)

        sent = client.post(
            "/auth/login",
            data={"csrf_token": client.csrf_token, "email": "ada@example.com", "password": "x"},
            headers={"Referer": referer},
            base_url=ORIGIN,
        )

        assert sent.status_code == 400, referer
        assert "expired" in page_text(sent)
