"""Google sign-in end to end, against an OpenID provider running on 127.0.0.1."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import authlib.integrations.flask_client  # noqa: F401  (imported while pytest loads, see below)
import pytest
import requests
from sqlalchemy import func, select

from elysium.config import ConfigurationError
from elysium.extensions import db
from elysium.models import OAuthAccount, User
from tests.conftest import PASSWORD, AuthActions, make_app, page_text
from tests.html import csrf_token, form_fields
from tests.support.meanwhile import in_another_window, meanwhile
from tests.support.oidc_provider import OIDCProvider
from tests.support.shop_process import ShopProcess

# Authlib switches its own deprecation warnings to "always" when first imported, which would
# hide them from pytest's "error" filter in the first test that imports it: importing it at
# module level makes any such warning fail the run at collection instead.

GOOGLE_USER = {
    "sub": "google-sub-1",
    "email": "grace@example.com",
    "email_verified": True,
    "name": "Grace Hopper",
    "given_name": "Grace",
    "family_name": "Hopper",
}
# GOOGLE_TIMEOUT_SECONDS in these tests: how long the shop waits for each answer of the provider.
TIMEOUT = 1
UNAVAILABLE = "Google sign-in is unavailable"
DIDNT_COMPLETE = "Google sign-in didn't complete"


@pytest.fixture(scope="module")
def oidc():
    with OIDCProvider("elysium-google-client", "elysium-google-secret") as provider:
        yield provider


def google_settings(oidc: OIDCProvider) -> dict:
    return {
        "GOOGLE_CLIENT_ID": oidc.client_id,
        "GOOGLE_CLIENT_SECRET": oidc.client_secret,
        "GOOGLE_ISSUER": oidc.issuer,
        "GOOGLE_TIMEOUT_SECONDS": TIMEOUT,
    }


@pytest.fixture(scope="module")
def google_app(app, oidc):
    return make_app(app.config["SQLALCHEMY_DATABASE_URI"], **google_settings(oidc))


@pytest.fixture(autouse=True)
def _provider_behaves(oidc):
    """Every test starts with a provider that behaves, and leaves it so (which also lets go of
    any request a test left hanging)."""
    oidc.reset()
    yield
    oidc.reset()


@pytest.fixture
def browser(google_app):
    return google_app.test_client()


@pytest.fixture
def new_shop(app, oidc):
    """A shop that has not asked the provider anything yet, like a worker that just started:
    it has no discovery document and no keys."""
    return make_app(app.config["SQLALCHEMY_DATABASE_URI"], **google_settings(oidc))


def press_google_button(client, next_path: str = ""):
    client.get("/auth/login")
    return client.post("/auth/google", data={"csrf_token": client.csrf_token, "next": next_path})


def start(client, next_path: str = ""):
    response = press_google_button(client, next_path)
    assert response.status_code == 302
    return response.headers["Location"]


def callback_path(oidc, authorization_url: str) -> str:
    parts = urlsplit(oidc.authorize(authorization_url))
    return f"{parts.path}?{parts.query}"


def sign_in(client, oidc, identity=None, next_path: str = ""):
    oidc.next_identity = dict(identity or GOOGLE_USER)
    return client.get(callback_path(oidc, start(client, next_path)))


def users(google_app) -> int:
    with google_app.app_context():
        return db.session.scalar(select(func.count()).select_from(User))


def assert_nobody_signed_in(shop, client) -> None:
    assert client.get("/account").status_code == 303
    with shop.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 0
        assert db.session.scalar(select(func.count()).select_from(OAuthAccount)) == 0


def test_the_google_button_shows_only_when_configured(client, browser):
    assert "Sign in with Google" not in page_text(client.get("/auth/login"))
    assert "Sign in with Google" in page_text(browser.get("/auth/login"))


def test_the_authorization_request_uses_state_nonce_and_pkce(browser):
    query = parse_qs(urlsplit(start(browser)).query)
    assert query["response_type"] == ["code"]
    assert "openid" in query["scope"][0]
    assert query["state"][0]
    assert query["nonce"][0]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43


def test_a_new_google_user_gets_an_account_keyed_on_sub(google_app, browser, oidc):
    response = sign_in(browser, oidc)
    assert response.status_code == 303
    assert response.headers["Location"] == "/account"
    assert "Grace Hopper" in page_text(browser.get("/account"))
    with google_app.app_context():
        user = db.session.scalar(select(User).where(User.email == "grace@example.com"))
        assert user.password_hash is None
        assert user.email_verified_at is not None
        assert [(a.provider, a.subject) for a in user.oauth_accounts] == [
            ("google", "google-sub-1")
        ]


def test_the_same_sub_signs_into_the_same_account_even_after_an_email_change(
    google_app, browser, oidc
):
    sign_in(browser, oidc)
    other = google_app.test_client()
    response = sign_in(other, oidc, {**GOOGLE_USER, "email": "grace.h@example.com"})
    assert response.status_code == 303
    assert users(google_app) == 1
    assert "grace@example.com" in page_text(other.get("/account"))


def test_next_is_honoured_after_google_sign_in(google_app, browser, oidc, catalogue):
    response = sign_in(browser, oidc, next_path="/shop/aurelia-fine-chain")
    assert response.headers["Location"] == "/shop/aurelia-fine-chain"
    response = sign_in(google_app.test_client(), oidc, next_path="//evil.example/")
    assert response.headers["Location"] == "/account"


def test_an_unverified_google_email_is_never_used(google_app, browser, oidc):
    response = sign_in(browser, oidc, {**GOOGLE_USER, "email_verified": False})
    assert response.status_code == 400
    assert "hasn't verified the email" in page_text(response)
    assert users(google_app) == 0
    assert browser.get("/account").status_code == 303


def test_an_unverified_google_email_is_not_linked_to_an_existing_account(google_app, browser, oidc):
    AuthActions(google_app, browser).create_user("grace@example.com")
    response = sign_in(browser, oidc, {**GOOGLE_USER, "email_verified": False})
    assert response.status_code == 400
    with google_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OAuthAccount)) == 0


def test_an_existing_password_account_is_linked_only_after_its_password(google_app, browser, oidc):
    AuthActions(google_app, browser).create_user("grace@example.com", first_name="Grace")
    response = sign_in(browser, oidc)
    assert response.headers["Location"] == "/auth/google/link"
    assert browser.get("/account").status_code == 303

    page = browser.get("/auth/google/link")
    assert "grace@example.com already has an ELYSIUM account" in page_text(page)
    assert page.headers["Cache-Control"] == "no-store"  # it shows the address: kept nowhere
    wrong = browser.post(
        "/auth/google/link", data={"csrf_token": browser.csrf_token, "password": "not it at all"}
    )
    assert wrong.status_code == 422
    assert "That password is not correct." in page_text(wrong)
    assert wrong.headers["Cache-Control"] == "no-store"
    with google_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OAuthAccount)) == 0

    right = browser.post(
        "/auth/google/link", data={"csrf_token": browser.csrf_token, "password": PASSWORD}
    )
    assert right.status_code == 303
    assert browser.get("/account").status_code == 200
    assert users(google_app) == 1

    again = google_app.test_client()
    assert sign_in(again, oidc).headers["Location"] == "/account"


def test_the_link_form_sent_twice_links_once_and_signs_in_both_times(google_app, browser, oidc):
    """A double click sends the form again with the cookie from before the first answer: the
    second found the identity linked by the first, and was a 500 (found by review)."""
    AuthActions(google_app, browser).create_user("grace@example.com", first_name="Grace")
    assert sign_in(browser, oidc).headers["Location"] == "/auth/google/link"
    browser.get("/auth/google/link")
    before, token = browser.get_cookie("session").value, browser.csrf_token

    first = browser.post("/auth/google/link", data={"csrf_token": token, "password": PASSWORD})
    browser.set_cookie("session", before)
    second = browser.post("/auth/google/link", data={"csrf_token": token, "password": PASSWORD})

    assert (first.status_code, second.status_code) == (303, 303)
    assert browser.get("/account").status_code == 200
    with google_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OAuthAccount)) == 1


def test_a_new_person_signing_in_on_two_devices_at_once_gets_one_account_on_both(google_app, oidc):
    """Each device's sign-in made the account; the one that came second met the first's and
    was a 500 (found by review)."""
    if google_app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: the second can't meet the first")
    phone, laptop = google_app.test_client(), google_app.test_client()
    paths = []
    for device in (phone, laptop):
        oidc.next_identity = dict(GOOGLE_USER)
        paths.append(callback_path(oidc, start(device)))
    answers = []

    def laptop_signs_in() -> None:
        answers.append(laptop.get(paths[1]).status_code)

    making = lambda sql: sql.lstrip().startswith("INSERT INTO users")  # noqa: E731
    with meanwhile(google_app, making, lambda: in_another_window(laptop_signs_in)) as ran:
        answers.insert(0, phone.get(paths[0]).status_code)
    assert ran

    assert answers == [303, 303]
    assert phone.get("/account").status_code == 200
    assert laptop.get("/account").status_code == 200
    assert users(google_app) == 1


def test_the_link_page_refused_for_too_many_tries_still_names_the_account(
    google_app, browser, oidc
):
    """Its 429 is the same page; before, it lost the address (" already has an ELYSIUM
    account")."""
    AuthActions(google_app, browser).create_user("grace@example.com", first_name="Grace")
    assert sign_in(browser, oidc).headers["Location"] == "/auth/google/link"
    browser.get("/auth/google/link")
    for _ in range(5):
        wrong = browser.post(
            "/auth/google/link", data={"csrf_token": browser.csrf_token, "password": "not it"}
        )
        assert wrong.status_code == 422

    limited = browser.post(
        "/auth/google/link", data={"csrf_token": browser.csrf_token, "password": "not it"}
    )

    assert limited.status_code == 429
    assert "grace@example.com already has an ELYSIUM account" in page_text(limited)


def test_the_link_page_without_a_pending_google_sign_in_goes_to_login(browser):
    assert browser.get("/auth/google/link").headers["Location"] == "/auth/login"


def test_a_callback_with_a_forged_state_is_refused(google_app, browser, oidc):
    oidc.next_identity = dict(GOOGLE_USER)
    path = callback_path(oidc, start(browser))
    parts = urlsplit(path)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    query["state"] = "forged-state"
    response = browser.get(f"{parts.path}?{urlencode(query)}")
    assert response.status_code == 400
    assert "Google sign-in didn't complete" in page_text(response)
    assert users(google_app) == 0


def test_a_replayed_callback_is_refused(google_app, browser, oidc):
    oidc.next_identity = dict(GOOGLE_USER)
    path = callback_path(oidc, start(browser))
    assert browser.get(path).status_code == 303
    assert AuthActions(google_app, browser).logout().status_code == 303
    replay = browser.get(path)
    assert replay.status_code == 400
    assert browser.get("/account").status_code == 303


def test_a_callback_in_another_browser_is_refused(google_app, browser, oidc):
    oidc.next_identity = dict(GOOGLE_USER)
    path = callback_path(oidc, start(browser))
    attacker = google_app.test_client()
    assert attacker.get(path).status_code == 400
    assert users(google_app) == 0


@pytest.mark.parametrize(
    "misbehaviour", ["sign_with_wrong_key", "wrong_nonce", "wrong_audience", "expired_id_token"]
)
def test_an_untrustworthy_id_token_is_refused(google_app, browser, oidc, misbehaviour):
    setattr(oidc, misbehaviour, True)
    oidc.include_azp = misbehaviour == "wrong_audience"
    response = sign_in(browser, oidc)
    assert response.status_code == 400
    assert users(google_app) == 0


def test_a_declined_consent_is_explained(google_app, browser, oidc):
    oidc.authorize_error = "access_denied"
    response = sign_in(browser, oidc)
    assert response.status_code == 400
    assert "Google sign-in didn't complete" in page_text(response)


def test_a_provider_down_when_the_shop_first_asks_is_explained_and_the_password_form_stays(
    new_shop, oidc
):
    browser = new_shop.test_client()
    with oidc.down():
        response = press_google_button(browser, "/shop/aurelia-fine-chain")
    assert response.status_code == 503
    assert UNAVAILABLE in page_text(response)
    login_form = form_fields(response, 'form[action="/auth/login"]')
    assert {"email", "password"} <= login_form.keys()
    assert login_form["next"] == "/shop/aurelia-fine-chain"
    assert_nobody_signed_in(new_shop, browser)


def test_sign_in_works_again_once_the_provider_is_back_without_a_restart(new_shop, oidc):
    browser = new_shop.test_client()
    with oidc.down():
        assert press_google_button(browser).status_code == 503
    oidc.failing = {"discovery": 503}
    assert press_google_button(browser).status_code == 503
    oidc.failing = {}
    response = sign_in(browser, oidc)
    assert response.status_code == 303
    assert response.headers["Location"] == "/account"
    assert "Grace Hopper" in page_text(browser.get("/account"))


@pytest.mark.parametrize("endpoint", ["discovery", "token", "jwks"])
def test_a_hanging_provider_gets_the_unavailable_page_within_seconds(new_shop, oidc, endpoint):
    """Not after gunicorn's 60 s, and not as its bare "Internal Server Error"."""
    browser = new_shop.test_client()
    oidc.next_identity = dict(GOOGLE_USER)
    oidc.hanging = {endpoint}
    began = time.monotonic()
    if endpoint == "discovery":
        response = press_google_button(browser)
    else:
        response = browser.get(callback_path(oidc, start(browser)))
    assert time.monotonic() - began < 5 * TIMEOUT
    assert response.status_code == 503
    assert UNAVAILABLE in page_text(response)
    assert_nobody_signed_in(new_shop, browser)


@pytest.mark.parametrize(
    ("endpoint", "status"), [("discovery", 503), ("token", 500), ("jwks", 502)]
)
def test_a_provider_answering_with_a_server_error_gets_the_unavailable_page(
    new_shop, oidc, endpoint, status
):
    browser = new_shop.test_client()
    oidc.next_identity = dict(GOOGLE_USER)
    oidc.failing = {endpoint: status}
    if endpoint == "discovery":
        response = press_google_button(browser)
    else:
        response = browser.get(callback_path(oidc, start(browser)))
    assert response.status_code == 503
    assert UNAVAILABLE in page_text(response)
    assert_nobody_signed_in(new_shop, browser)


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({}, {"discovery": 200}),  # an HTML page with 200 OK, as a proxy or captive portal sends
        ({"jwks_uri": None}, {}),
        ({"token_endpoint": None}, {}),
        ({"issuer": "https://accounts.elsewhere.example"}, {}),
    ],
    ids=["an html page", "no jwks_uri", "no token_endpoint", "another issuer"],
)
def test_an_unusable_discovery_document_is_explained_and_not_kept(new_shop, oidc, changes, failing):
    browser = new_shop.test_client()
    oidc.discovery_changes = changes
    oidc.failing = failing
    response = press_google_button(browser)
    assert response.status_code == 503
    assert UNAVAILABLE in page_text(response)
    oidc.discovery_changes = {}
    oidc.failing = {}
    assert sign_in(browser, oidc).headers["Location"] == "/account"


def test_a_provider_gone_between_the_redirect_and_the_callback_gets_the_unavailable_page(
    new_shop, oidc
):
    browser = new_shop.test_client()
    oidc.next_identity = dict(GOOGLE_USER)
    path = callback_path(oidc, start(browser))
    with oidc.down():
        response = browser.get(path)
    assert response.status_code == 503
    assert UNAVAILABLE in page_text(response)
    assert_nobody_signed_in(new_shop, browser)


def test_a_slow_provider_that_answers_in_time_still_signs_in(new_shop, oidc):
    oidc.slow = {"discovery": TIMEOUT / 3, "token": TIMEOUT / 3, "jwks": TIMEOUT / 3}
    browser = new_shop.test_client()
    assert sign_in(browser, oidc).headers["Location"] == "/account"
    assert browser.get("/account").status_code == 200


@pytest.mark.parametrize("code", [None, ""], ids=["no code", "empty code"])
def test_a_callback_with_a_valid_state_but_no_code_is_refused(google_app, browser, code):
    state = parse_qs(urlsplit(start(browser)).query)["state"][0]
    query = {"state": state} if code is None else {"state": state, "code": code}
    response = browser.get(f"/auth/google/callback?{urlencode(query)}")
    assert response.status_code == 400
    assert DIDNT_COMPLETE in page_text(response)
    assert_nobody_signed_in(google_app, browser)


@pytest.mark.parametrize(
    ("advertised", "alg"),
    [
        (["none"], "none"),
        (["RS256", "none"], "none"),
        (["HS256"], "HS256"),
        (None, "HS256"),
    ],
    ids=["none", "RS256 and none", "HS256", "nothing advertised, HS256"],
)
def test_an_id_token_not_signed_with_rs256_is_refused_whatever_discovery_says(
    new_shop, oidc, advertised, alg
):
    oidc.advertised_algorithms = advertised
    oidc.id_token_alg = alg
    browser = new_shop.test_client()
    response = sign_in(browser, oidc)
    assert response.status_code == 400
    assert DIDNT_COMPLETE in page_text(response)
    assert_nobody_signed_in(new_shop, browser)


def test_rs256_is_accepted_even_when_discovery_advertises_something_else(new_shop, oidc):
    oidc.advertised_algorithms = ["ES256"]
    browser = new_shop.test_client()
    assert sign_in(browser, oidc).headers["Location"] == "/account"


@pytest.mark.parametrize("seconds", [0, -1])
def test_a_google_timeout_under_one_second_is_refused_at_start_up(app, oidc, seconds):
    """Authlib would take 0 as "wait for ever"."""
    settings = google_settings(oidc) | {"GOOGLE_TIMEOUT_SECONDS": seconds}
    with pytest.raises(ConfigurationError, match="GOOGLE_TIMEOUT_SECONDS"):
        make_app(app.config["SQLALCHEMY_DATABASE_URI"], **settings)


def press_google_button_over_http(base_url: str) -> tuple[requests.Session, requests.Response]:
    """A new browser opens the sign-in page and presses "Sign in with Google"."""
    browser = requests.Session()
    token = csrf_token(browser.get(f"{base_url}/auth/login", timeout=30).text)
    response = browser.post(
        f"{base_url}/auth/google",
        data={"csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    return browser, response


def at_once(base_url: str, shoppers: int) -> list[tuple[requests.Session, requests.Response]]:
    """Several shoppers press the button together, so every worker gets some of them."""
    with ThreadPoolExecutor(shoppers) as pool:
        return list(pool.map(lambda _: press_google_button_over_http(base_url), range(shoppers)))


def test_an_outage_under_gunicorn_shows_the_shops_page_and_every_worker_recovers(app, oidc):
    settings = {
        "ELYSIUM_ENV": "testing",
        "SECRET_KEY": "test-secret-key-not-for-production",
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "EMAIL_BACKEND": "console",
        **{name: str(value) for name, value in google_settings(oidc).items()},
    }
    with ShopProcess(settings, workers=2) as shop:
        oidc.hanging = {"discovery"}
        began = time.monotonic()
        hung = at_once(shop.base_url, 4)
        assert time.monotonic() - began < 10 * TIMEOUT
        oidc.reset()
        with oidc.down():
            refused = at_once(shop.base_url, 4)
        for _, response in hung + refused:
            assert response.status_code == 503
            assert UNAVAILABLE in response.text

        oidc.next_identity = dict(GOOGLE_USER)
        oidc.slow = {"discovery": TIMEOUT / 3}  # keeps a worker busy, so the other answers too
        answered = at_once(shop.base_url, 4)
        for _, response in answered:
            assert response.status_code == 302
            assert response.headers["Location"].startswith(f"{oidc.base_url}/authorize?")
        browser, response = answered[0]
        callback = oidc.authorize(response.headers["Location"])
        done = browser.get(callback, allow_redirects=False, timeout=30)
        assert done.status_code == 303
        account = browser.get(urljoin(shop.base_url, done.headers["Location"]), timeout=30)
        assert account.url == f"{shop.base_url}/account"
        assert "Grace Hopper" in account.text


def test_a_name_from_google_is_kept_as_a_typed_one_is(google_app, oidc) -> None:
    """Google's names were kept as sent (a direction override, a line break, spaces around):
    the profile showed them back, and saving anything there (a phone, marketing consent)
    was refused over a name the shopper never typed (found by review)."""
    browser = google_app.test_client()
    identity = {
        **GOOGLE_USER,
        "sub": "google-sub-rtl",
        "email": "noor@example.com",
        "given_name": "Noor\u202e",
        "family_name": "  Haddad\n",
    }
    sign_in(browser, oidc, identity)
    with google_app.app_context():
        user = db.session.scalar(select(User).where(User.email == "noor@example.com"))
        first, last = user.first_name, user.last_name
    assert (first, last) == ("Noor", "Haddad")
    saved = browser.submit(
        "/account/profile",
        {"first_name": first, "last_name": last, "phone": "+44 20 7946 0000"},
        action="/account/profile",
    )
    assert saved.status_code == 303, page_text(saved)
