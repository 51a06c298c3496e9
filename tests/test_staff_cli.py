"""``flask create-staff`` and ``flask revoke-staff``: a staff account without a default
password, a link to choose one that works once within 24 hours, and revocation that ends
every session at once."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pyotp
import pytest
from flask import Flask
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Order, RecoveryCode, Role, User
from elysium.services import passwords
from tests.conftest import PASSWORD, ShopClient, create_user, link_in, page_text, sent_emails
from tests.html import Page, field_error, text_of
from tests.support.orders import pending_chain_order
from tests.support.staff import STAFF_EMAIL, staff_client

SECOND_FACTOR = "/staff/security/second-factor"
STAFF_PASSWORD = "a lantern over the workshop bench"


def create_staff(runner, email: str = STAFF_EMAIL) -> tuple[str, str]:
    """Run ``flask create-staff``; returns what it printed and the path of its link."""
    result = runner.invoke(args=["create-staff", email])
    assert result.exit_code == 0, result.output
    [link] = [line for line in result.output.splitlines() if "/auth/welcome/" in line]
    return result.output, urlsplit(link.strip()).path


def user_row(app: Flask, email: str = STAFF_EMAIL) -> User | None:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        db.session.expunge_all()
        return user


def sign_in(client: ShopClient, email: str = STAFF_EMAIL, password: str = PASSWORD):
    return client.submit("/auth/login", {"email": email, "password": password})


def signed_at(app: Flask, token: str, seconds_ago: int) -> str:
    """The same link's payload, signed ``seconds_ago`` seconds ago (itsdangerous's own
    timestamp, so nobody waits a day)."""

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - seconds_ago

    real = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="elysium.welcome")
    payload = real.loads(token)
    earlier = URLSafeTimedSerializer(
        app.config["SECRET_KEY"], salt="elysium.welcome", signer=Earlier
    )
    return earlier.dumps(payload)


def test_create_staff_makes_an_account_without_a_password_and_prints_a_link(app, runner, client):
    output, link = create_staff(runner, " Kit@Elysium.example ")

    assert "Created a staff account for kit@elysium.example." in output
    assert f"{app.config['SITE_URL']}{link}" in output.split()  # a link on SITE_URL
    assert "works once, within 24 hours" in output
    user = user_row(app, "kit@elysium.example")
    assert user.role is Role.STAFF
    assert user.password_hash is None
    # No password opens it, however likely.
    for guess in ("password", "changeme", "elysium", "staff", "kit@elysium.example", " "):
        refused = sign_in(client, "kit@elysium.example", guess)
        assert refused.status_code == 422, guess
    assert client.get("/account").status_code == 303


def test_the_link_sets_the_password_signs_in_and_leads_to_the_second_factor(app, runner, client):
    _, link = create_staff(runner)

    page = client.get(link)
    assert page.status_code == 200
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert text_of(page, "#welcome-email") == STAFF_EMAIL
    assert user_row(app).password_hash is None  # a GET changes nothing

    done = client.submit(link, {"password": STAFF_PASSWORD})
    assert done.status_code == 303
    assert done.headers["Location"] == SECOND_FACTOR
    enrolment = Page(client.get(SECOND_FACTOR))
    assert enrolment.one("img#totp-qr")
    key = text_of(enrolment, "#totp-key").replace(" ", "")
    assert client.submit(SECOND_FACTOR, {"code": pyotp.TOTP(key).now()}).status_code == 200
    assert client.get("/staff").status_code == 200
    user = user_row(app)
    assert passwords.verify_password(user.password_hash, STAFF_PASSWORD)
    assert user.is_verified

    again = browser_for(app)
    assert sign_in(again, password=STAFF_PASSWORD).status_code == 303
    # Their first password is no change to warn of: "If this wasn't you…" on their first
    # day read as a break-in (found by review).
    assert [e.template for e in sent_emails(app, STAFF_EMAIL)] == []


def browser_for(app: Flask) -> ShopClient:
    return app.test_client()  # type: ignore[return-value]


def test_the_link_works_once(app, runner, client):
    _, link = create_staff(runner)
    assert client.submit(link, {"password": STAFF_PASSWORD}).status_code == 303

    other = browser_for(app)
    used = other.get(link)
    assert used.status_code == 400
    assert "expired or has already been used" in page_text(used)
    assert other.submit(link, {"password": "someone else's password"}).status_code == 400
    assert passwords.verify_password(user_row(app).password_hash, STAFF_PASSWORD)


def test_staff_passwords_follow_the_password_rules(app, runner, client):
    _, link = create_staff(runner)
    for weak in ("short", "password123", "elysium-elysium"):
        refused = client.submit(link, {"password": weak})
        assert refused.status_code == 422, weak
        assert field_error(refused, "password"), weak
    assert user_row(app).password_hash is None
    assert client.submit(link, {"password": STAFF_PASSWORD}).status_code == 303


def test_the_link_expires_after_24_hours(app, runner, client):
    _, link = create_staff(runner)
    prefix, _, token = link.rpartition("/")

    a_day_and_an_hour_ago = f"{prefix}/{signed_at(app, token, 25 * 3600)}"
    expired = client.get(a_day_and_an_hour_ago)
    assert expired.status_code == 400
    assert client.submit(a_day_and_an_hour_ago, {"password": STAFF_PASSWORD}).status_code == 400
    assert user_row(app).password_hash is None

    almost_a_day_ago = f"{prefix}/{signed_at(app, token, 23 * 3600)}"
    assert client.get(almost_a_day_ago).status_code == 200


def test_a_new_link_replaces_the_old_one(app, runner, client):
    _, first = create_staff(runner)
    output, second = create_staff(runner)
    assert f"{STAFF_EMAIL} is already staff." in output
    assert client.get(first).status_code == 400
    assert client.get(second).status_code == 200


def test_a_reset_link_is_not_a_welcome_link_nor_the_reverse(app, runner, client):
    _, welcome = create_staff(runner)
    welcome_token = welcome.rpartition("/")[2]
    assert client.get(f"/auth/reset/{welcome_token}").status_code == 400
    assert client.get(welcome).status_code == 200

    client.submit("/auth/forgot", {"email": STAFF_EMAIL})
    reset = link_in(sent_emails(app, STAFF_EMAIL)[-1], "/auth/reset/")
    reset_token = reset.rpartition("/")[2]
    assert client.get(f"/auth/welcome/{reset_token}").status_code == 400
    assert client.get(reset).status_code == 200


def test_create_staff_promotes_a_shopper_who_keeps_their_orders(app, runner, catalogue):
    with app.app_context():
        user_id = create_user("ada@example.com")
    order = pending_chain_order(app)
    with app.app_context():
        db.session.get(Order, order["id"]).user_id = user_id
        db.session.commit()

    output, _ = create_staff(runner, "ada@example.com")

    assert "ada@example.com is now staff (their account and orders are kept)." in output
    ada = user_row(app, "ada@example.com")
    assert ada.id == user_id
    assert ada.role is Role.STAFF
    client = browser_for(app)
    assert sign_in(client, "ada@example.com").status_code == 303  # her password still works
    assert order["number"] in page_text(client.get("/account/orders"))
    assert client.get("/staff").headers["Location"].startswith(SECOND_FACTOR)


def test_create_staff_promotes_the_account_of_the_form_typed(app, runner):
    """One person's two accounts, "josé" typed two ways, left as they were by migration 0029:
    naming the one with a combining accent promoted the other (the address was composed
    before the account was looked up; found by review)."""
    combining, composed = "jose\u0301@example.com", "jos\u00e9@example.com"
    with app.app_context():
        first = create_user(combining)
        other = create_user(composed)

    create_staff(runner, combining)

    assert user_row(app, combining).id == first
    assert user_row(app, combining).role is Role.STAFF
    assert user_row(app, composed).id == other
    assert user_row(app, composed).role is Role.CUSTOMER


def test_a_promoted_shoppers_password_replaced_through_the_link_tells_her(app, runner, client):
    """Her password changed is a change to warn of, unlike a new colleague's first one."""
    with app.app_context():
        create_user("ada@example.com")
    _, link = create_staff(runner, "ada@example.com")

    assert client.submit(link, {"password": STAFF_PASSWORD}).status_code == 303
    changed = [e for e in sent_emails(app, "ada@example.com") if e.template == "password_changed"]
    assert len(changed) == 1


def test_a_shoppers_session_from_before_the_promotion_never_sees_the_staff_key(app, runner):
    """A session of Ada's as a shopper (a shared computer, a stolen cookie) reached the
    authenticator's enrolment once she was made staff, which asks for nothing more, and
    with it the back office. Promotion ends her sessions: the back office begins with her
    password."""
    with app.app_context():
        create_user("ada@example.com")
    before = browser_for(app)
    assert sign_in(before, "ada@example.com").status_code == 303

    create_staff(runner, "ada@example.com")

    for page in (SECOND_FACTOR, "/staff", "/account"):
        assert before.get(page).headers.get("Location", "").startswith("/auth/login"), page
    assert "totp-key" not in page_text(before.get(SECOND_FACTOR, follow_redirects=True))
    assert sign_in(before, "ada@example.com").status_code == 303
    assert Page(before.get(SECOND_FACTOR)).select("#totp-key")


@pytest.mark.parametrize("email", ["not-an-email", "ada@", ""])
def test_create_staff_refuses_what_is_not_an_email_address(app, runner, email):
    result = runner.invoke(args=["create-staff", email])
    assert result.exit_code != 0
    with app.app_context():
        assert db.session.scalars(select(User)).all() == []


def test_revoke_staff_demotes_forgets_the_authenticator_and_ends_every_session(app, runner):
    client = staff_client(app)
    other = browser_for(app)
    assert sign_in(other).status_code == 303
    staff_before = user_row(app)

    result = runner.invoke(args=["revoke-staff", STAFF_EMAIL])

    assert result.exit_code == 0, result.output
    assert "is no longer staff" in result.output
    for browser in (client, other):
        assert browser.get("/account").headers["Location"].startswith("/auth/login")
    user = user_row(app)
    assert user.role is Role.CUSTOMER
    assert user.totp_secret is None
    assert user.session_version > staff_before.session_version
    with app.app_context():
        assert not db.session.scalars(
            select(RecoveryCode).where(RecoveryCode.used_at.is_(None))
        ).all()

    # Signed in again, a shopper: no back office.
    assert sign_in(client).status_code == 303
    assert client.get("/staff").status_code == 404

    # Made staff again, they sign in again and start from a new key: the old authenticator
    # is no use.
    create_staff(runner)
    assert sign_in(client).status_code == 303
    page = Page(client.get(SECOND_FACTOR))
    new_key = text_of(page, "#totp-key").replace(" ", "")
    assert new_key != staff_before.totp_secret
    old = client.submit(SECOND_FACTOR, {"code": pyotp.TOTP(staff_before.totp_secret).now()})
    assert old.status_code == 422


def test_revoking_kills_an_unused_welcome_link(app, runner, client):
    _, link = create_staff(runner)
    assert runner.invoke(args=["revoke-staff", STAFF_EMAIL]).exit_code == 0
    assert client.get(link).status_code == 400


def test_revoke_staff_of_an_unknown_email_fails_and_of_a_shopper_changes_nothing(app, runner):
    unknown = runner.invoke(args=["revoke-staff", "nobody@example.com"])
    assert unknown.exit_code == 1
    assert "no account" in unknown.output

    with app.app_context():
        create_user("ada@example.com")
    before = user_row(app, "ada@example.com")
    shopper = runner.invoke(args=["revoke-staff", "ada@example.com"])
    assert shopper.exit_code == 0
    assert "not staff: nothing changed" in shopper.output
    assert user_row(app, "ada@example.com").session_version == before.session_version
