"""Who gets through to a staff page: every /staff URL in the app, as a guest, a shopper, a
member of staff before and after the second factor; the 30-minute idle limit, the 12-hour
life of the second factor, and a member of staff revoked mid-session.

The URLs are read from the app's URL map when the tests are collected, so a staff page added
tomorrow is checked too; a URL parameter needs a sample value in ``SAMPLES`` (the test
``test_every_staff_url_parameter_has_a_sample_value`` says which one is missing).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.routing import Rule

from elysium.extensions import db
from elysium.models import Refund, RefundStatus, Role, User
from elysium.models.engagement import BespokeLead
from elysium.models.types import utcnow
from elysium.web.staff_session import LAST_SEEN, SECOND_FACTOR_AT, SECOND_FACTOR_USER
from tests.conftest import (
    PASSWORD,
    ShopClient,
    app_settings,
    create_user,
    make_app,
    page_text,
    sent_emails,
)
from tests.support.orders import pending_chain_order
from tests.support.staff import (
    STAFF_EMAIL,
    create_staff,
    sign_in_staff,
    staff_client,
    unused_code,
)

SECOND_FACTOR = "/staff/security/second-factor"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# The second factor's own pages: a member of staff reaches them before passing it.
BEFORE_THE_FACTOR = {"staff.security.second_factor", "staff.security.new_key"}


@dataclass(frozen=True)
class StaffData:
    """What staff pages work on, made for each test: an order (with a refund Stripe never
    confirmed), a stock row, a lead."""

    order_number: str
    inventory_id: int
    lead_id: int
    refund_id: int


# A sample value for every URL parameter of a staff page, by parameter name.
SAMPLES: dict[str, Callable[[StaffData], object]] = {
    "number": lambda data: data.order_number,
    "inventory_id": lambda data: data.inventory_id,
    "lead_id": lambda data: data.lead_id,
    "refund_id": lambda data: data.refund_id,
}


@dataclass(frozen=True)
class StaffRequest:
    endpoint: str
    rule: str
    method: str
    arguments: frozenset[str]

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"

    def url(self, app: Flask, data: StaffData) -> str:
        values = {name: SAMPLES[name](data) for name in self.arguments}
        adapter = app.url_map.bind("localhost")
        return adapter.build(self.endpoint, values, method=self.method)


def staff_requests(rules: list[Rule]) -> list[StaffRequest]:
    return sorted(
        (
            StaffRequest(rule.endpoint, rule.rule, method, frozenset(rule.arguments))
            for rule in rules
            if rule.rule == "/staff" or rule.rule.startswith("/staff/")
            for method in METHODS
            if method in (rule.methods or ())
        ),
        key=str,
    )


def _collected() -> list[StaffRequest]:
    """The staff URLs of an app made as the suite makes its own (no database is opened), with
    none of the shell's settings."""
    with pytest.MonkeyPatch.context() as patch:
        for name in app_settings() - {"TEST_DATABASE_URL"}:
            patch.delenv(name, raising=False)
        patch.setenv("ELYSIUM_INSTANCE_PATH", tempfile.gettempdir())
        app = make_app("sqlite://")
    return staff_requests(list(app.url_map.iter_rules()))


STAFF_REQUESTS = _collected()


@pytest.fixture
def data(app: Flask, catalogue: dict) -> StaffData:
    order = pending_chain_order(app)
    with app.app_context():
        lead = BespokeLead(name="Grace Hopper", email="grace@example.com", message="A ring")
        refund = Refund(
            order_id=order["id"],
            amount=100,
            currency="GBP",
            status=RefundStatus.PENDING,
            idempotency_key=f"refund:{order['number']}:unconfirmed",
        )
        db.session.add_all([lead, refund])
        db.session.commit()
        lead_id, refund_id = lead.id, refund.id
        db.session.remove()
    return StaffData(
        order_number=order["number"],
        inventory_id=order["inventory_id"],
        lead_id=lead_id,
        refund_id=refund_id,
    )


def browser(app: Flask) -> ShopClient:
    return app.test_client()  # type: ignore[return-value]


def shopper(app: Flask) -> ShopClient:
    with app.app_context():
        create_user("ada@example.com")
    client = browser(app)
    response = client.submit("/auth/login", {"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 303
    return client


def staff_before_the_factor(app: Flask) -> ShopClient:
    create_staff(app)
    client = browser(app)
    response = client.submit("/auth/login", {"email": STAFF_EMAIL, "password": PASSWORD})
    assert response.status_code == 303
    return client


def send(client: ShopClient, request: StaffRequest, url: str, *, htmx: bool = False):
    """The request as a browser sends it: a form carries the CSRF token of a page it opened."""
    client.get("/cart")  # any page: its CSRF token is this session's
    if htmx:
        return client.htmx(request.method, url)
    data = {} if request.method == "GET" else {"csrf_token": client.csrf_token}
    return client.open(url, method=request.method, data=data)


def where_to(response) -> str:
    """The path a response sends the browser to (a redirect, or htmx's HX-Redirect)."""
    location = response.headers.get("HX-Redirect") or response.headers.get("Location") or ""
    return urlsplit(location).path


def test_the_staff_urls_are_read_from_the_app(app):
    assert {str(request) for request in staff_requests(list(app.url_map.iter_rules()))} == {
        str(request) for request in STAFF_REQUESTS
    }
    assert "GET /staff" in {str(request) for request in STAFF_REQUESTS}
    assert f"POST {SECOND_FACTOR}" in {str(request) for request in STAFF_REQUESTS}


def test_every_staff_url_parameter_has_a_sample_value():
    missing = {
        f"{request.rule}: {name}"
        for request in STAFF_REQUESTS
        for name in request.arguments
        if name not in SAMPLES
    }
    assert not missing, f"add a sample value to SAMPLES in {__name__} for {sorted(missing)}"


@pytest.mark.parametrize("request_", STAFF_REQUESTS, ids=str)
def test_a_guest_is_sent_to_sign_in(app, data, request_):
    client = browser(app)
    url = request_.url(app, data)

    plain = send(client, request_, url)
    assert plain.status_code == 303
    assert where_to(plain) == "/auth/login"
    if request_.method == "GET":
        assert plain.headers["Location"].endswith(f"?next={url}")

    htmx = send(client, request_, url, htmx=True)
    assert htmx.status_code == 204
    assert where_to(htmx) == "/auth/login"


@pytest.mark.parametrize("request_", STAFF_REQUESTS, ids=str)
def test_a_shopper_finds_nothing_there(app, data, request_):
    client = shopper(app)
    url = request_.url(app, data)
    assert send(client, request_, url).status_code == 404
    assert send(client, request_, url, htmx=True).status_code == 404
    assert client.get("/account").status_code == 200  # still signed in


@pytest.mark.parametrize("request_", STAFF_REQUESTS, ids=str)
def test_staff_are_sent_to_the_second_factor_first(app, data, request_):
    client = staff_before_the_factor(app)
    url = request_.url(app, data)

    plain = send(client, request_, url)
    htmx = send(client, request_, url, htmx=True)

    if request_.endpoint in BEFORE_THE_FACTOR:
        for response in (plain, htmx):
            assert response.status_code != 404
            assert where_to(response) != "/auth/login"
        return
    assert plain.status_code == 303
    assert where_to(plain) == SECOND_FACTOR
    if request_.method == "GET":
        assert plain.headers["Location"].endswith(f"?next={url}")
    assert htmx.status_code == 204
    assert where_to(htmx) == SECOND_FACTOR


@pytest.mark.parametrize("request_", STAFF_REQUESTS, ids=str)
def test_staff_past_the_second_factor_get_the_pages_own_answer(app, data, request_):
    client = staff_client(app)
    response = send(client, request_, request_.url(app, data))
    assert response.status_code != 404
    assert where_to(response) not in {"/auth/login", SECOND_FACTOR}


# The staff session


def set_times(client: ShopClient, **ages: timedelta) -> None:
    """Make the session's staff times as old as given: the clock is the session's own."""
    names = {"last_seen": LAST_SEEN, "second_factor": SECOND_FACTOR_AT}
    with client.session_transaction() as session:
        for name, age in ages.items():
            session[names[name]] = (utcnow() - age).timestamp()


def test_a_staff_page_seen_29_minutes_ago_keeps_the_session_going(app):
    client = staff_client(app)
    set_times(client, last_seen=timedelta(minutes=29, seconds=50))
    assert client.get("/staff").status_code == 200
    with client.session_transaction() as session:
        assert utcnow().timestamp() - session[LAST_SEEN] < 5  # the 30 minutes start again


def test_thirty_minutes_without_a_staff_page_signs_the_staff_member_out(app):
    client = staff_client(app)
    set_times(client, last_seen=timedelta(minutes=30, seconds=1))

    response = client.get("/staff/orders")

    assert response.status_code == 303
    assert response.headers["Location"] == "/auth/login?next=/staff/orders"
    assert "signed out after 30 minutes" in page_text(client.get(response.headers["Location"]))
    assert where_to(client.get("/account")) == "/auth/login"


def test_an_idle_staff_session_is_signed_out_for_htmx_too(app):
    client = staff_client(app)
    set_times(client, last_seen=timedelta(hours=1))
    response = client.htmx("GET", "/staff")
    assert response.status_code == 204
    assert where_to(response) == "/auth/login"
    assert where_to(client.get("/account")) == "/auth/login"


def test_an_idle_staff_session_does_not_come_back_through_the_remember_cookie(app):
    _, secret = create_staff(app)
    client = browser(app)
    signed = client.submit(
        "/auth/login", {"email": STAFF_EMAIL, "password": PASSWORD, "remember": "y"}
    )
    assert signed.status_code == 303
    assert client.submit(SECOND_FACTOR, {"code": unused_code(app, secret)}).status_code == 303
    set_times(client, last_seen=timedelta(minutes=31))

    assert where_to(client.get("/staff")) == "/auth/login"
    assert where_to(client.get("/account")) == "/auth/login"


def test_the_second_factor_lasts_12_hours(app):
    _, secret = create_staff(app)
    client = browser(app)
    sign_in_staff(client, secret)
    set_times(client, second_factor=timedelta(hours=11, minutes=59), last_seen=timedelta())
    assert client.get("/staff").status_code == 200

    set_times(client, second_factor=timedelta(hours=12, seconds=1), last_seen=timedelta())
    response = client.get("/staff/orders")
    assert response.status_code == 303
    assert response.headers["Location"] == f"{SECOND_FACTOR}?next=/staff/orders"
    assert client.get("/account").status_code == 200  # still signed in: only the factor expired

    again = client.submit(response.headers["Location"], {"code": unused_code(app, secret)})
    assert again.status_code == 303
    assert again.headers["Location"] == "/staff/orders"
    assert client.get("/staff").status_code == 200


def test_a_revoked_staff_members_open_session_is_refused_at_once(app, runner):
    client = staff_client(app)
    assert client.get("/staff").status_code == 200

    result = runner.invoke(args=["revoke-staff", STAFF_EMAIL])
    assert result.exit_code == 0, result.output

    assert where_to(client.get("/staff")) == "/auth/login"
    assert where_to(client.htmx("GET", "/staff")) == "/auth/login"
    assert where_to(client.get("/account")) == "/auth/login"


def test_staff_whose_role_is_taken_away_find_nothing_on_their_next_request(app):
    user_id, secret = create_staff(app)
    client = browser(app)
    sign_in_staff(client, secret)
    with app.app_context():
        db.session.get(User, user_id).role = Role.CUSTOMER
        db.session.commit()
    assert client.get("/staff").status_code == 404


def test_a_shopper_made_staff_mid_session_signs_in_again_and_needs_the_second_factor(app, runner):
    client = shopper(app)
    assert client.get("/staff").status_code == 404

    result = runner.invoke(args=["create-staff", "ada@example.com"])
    assert result.exit_code == 0, result.output

    response = client.get("/staff")
    assert response.status_code == 303
    assert where_to(response) == "/auth/login"  # the promotion ended her sessions
    signed = client.submit("/auth/login", {"email": "ada@example.com", "password": PASSWORD})
    assert signed.status_code == 303
    assert where_to(client.get("/staff")) == SECOND_FACTOR
    assert client.get("/staff/orders").status_code == 303


def test_a_second_factor_passed_by_one_account_does_not_carry_over_to_another(app):
    client = staff_client(app)
    create_staff(app, "second@elysium.example")
    signed = client.submit("/auth/login", {"email": "second@elysium.example", "password": PASSWORD})
    assert signed.status_code == 303
    assert where_to(client.get("/staff")) == SECOND_FACTOR


def test_a_session_cookie_marked_for_another_account_is_not_a_staff_session(app):
    """Even a session whose cookie names another account's second factor (as an old cookie
    might, after signing in again without the session being cleared) must pass it again."""
    client = staff_before_the_factor(app)
    with client.session_transaction() as session:
        session[SECOND_FACTOR_AT] = utcnow().timestamp()
        session[LAST_SEEN] = utcnow().timestamp()
        session[SECOND_FACTOR_USER] = "999:1"
    assert where_to(client.get("/staff")) == SECOND_FACTOR


def _password_hash(app: Flask, email: str) -> str:
    with app.app_context():
        found = db.session.scalars(select(User.password_hash).where(User.email == email)).one()
        db.session.remove()
        return found


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
def test_a_staff_password_alone_never_changes_the_staff_logins_email_or_password(
    app: Flask, htmx: bool
) -> None:
    """Someone who has a member of staff's password, and not their authenticator, signs in:
    the back office sends them to the second step. The account's own pages took them: they
    moved the login's email to their inbox (the link, once opened, ended the owner's
    sessions) or changed its password. Both now ask for the second step first, and come
    back to the account's details after it."""
    _, secret = create_staff(app)
    intruder = app.test_client()
    signed_in = intruder.submit("/auth/login", {"email": STAFF_EMAIL, "password": PASSWORD})
    assert signed_in.status_code == 303
    before = _password_hash(app, STAFF_EMAIL)
    asks = {
        "/account/email": {"email": "intruder@example.net", "current_password": PASSWORD},
        "/account/password": {"current_password": PASSWORD, "password": "a new long passphrase 9"},
    }
    for action, data in asks.items():
        intruder.get("/account/profile")
        sent = {"csrf_token": intruder.csrf_token, **data}
        if htmx:
            refused = intruder.htmx("POST", action, data=sent)
            location = refused.headers.get("HX-Redirect", "")
        else:
            refused = intruder.post(action, data=sent)
            location = refused.location or ""
        assert refused.status_code == (204 if htmx else 303), action
        assert location.startswith(SECOND_FACTOR), action
        assert "next=%2Faccount%2Fprofile" in location or "next=/account/profile" in location
    assert sent_emails(app, "intruder@example.net") == []
    assert _password_hash(app, STAFF_EMAIL) == before
    shown = page_text(intruder.get(SECOND_FACTOR))
    assert "change only in a session that has passed its second step" in shown

    # The owner, past the second step, changes them as any shopper does.
    owner = app.test_client()
    sign_in_staff(owner, secret)
    owner.get("/account/profile")
    changed = owner.post(
        "/account/password",
        data={"csrf_token": owner.csrf_token, **asks["/account/password"]},
    )
    assert changed.status_code == 303, page_text(changed)
    assert changed.location.endswith("/account/profile")
    assert _password_hash(app, STAFF_EMAIL) != before


def test_a_member_of_staff_away_from_the_back_office_still_changes_their_password(
    app: Flask,
) -> None:
    """Kit passed the second step, then spent 31 minutes on the shop's own pages. The guard
    sent her to the second step, whose idle check signed her out: the change, and why it was
    asked, lost. Passing the second step within its 12 hours is what the guard asks."""
    kit = staff_client(app)
    with kit.session_transaction() as session:
        session[LAST_SEEN] = (utcnow() - timedelta(minutes=31)).timestamp()
    before = _password_hash(app, STAFF_EMAIL)
    kit.get("/account/profile")

    changed = kit.post(
        "/account/password",
        data={
            "csrf_token": kit.csrf_token,
            "current_password": PASSWORD,
            "password": "a new long passphrase 9",
        },
    )

    assert changed.status_code == 303
    assert changed.location.endswith("/account/profile")
    assert _password_hash(app, STAFF_EMAIL) != before
    assert kit.get("/account/profile").status_code == 200
