"""Google sign-in end to end, against an OpenID provider running on 127.0.0.1."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import authlib.integrations.flask_client  # noqa: F401  (imported while pytest loads, see below)
import pytest
from sqlalchemy import func, select

from elysium.extensions import db
from elysium.models import OAuthAccount, User
from tests.conftest import PASSWORD, AuthActions, make_app, page_text
from tests.support.oidc_provider import OIDCProvider

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


@pytest.fixture(scope="module")
def oidc():
    with OIDCProvider("elysium-google-client", "elysium-google-secret") as provider:
        yield provider


@pytest.fixture(scope="module")
def google_app(app, oidc):
    return make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        GOOGLE_CLIENT_ID=oidc.client_id,
        GOOGLE_CLIENT_SECRET=oidc.client_secret,
        GOOGLE_ISSUER=oidc.issuer,
    )


@pytest.fixture
def browser(google_app, oidc):
    oidc.reset()
    return google_app.test_client()


def start(client, next_path: str = ""):
    client.get("/auth/login")
    response = client.post(
        "/auth/google", data={"csrf_token": client.csrf_token, "next": next_path}
    )
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
    wrong = browser.post(
        "/auth/google/link", data={"csrf_token": browser.csrf_token, "password": "not it at all"}
    )
    assert wrong.status_code == 422
    assert "That password is not correct." in page_text(wrong)
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
