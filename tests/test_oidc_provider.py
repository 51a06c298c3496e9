"""Self-test of the OpenID Connect provider in tests/support: it must behave like Google enough
for Authlib, and refuse what a real provider refuses. Nothing here touches the shop."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.integrations.flask_client import OAuth
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from flask import Flask, url_for
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from tests.support.oidc_provider import OIDCProvider, at_hash, s256

CLIENT_ID = "elysium-test-client"
CLIENT_SECRET = "elysium-test-secret"
REDIRECT_URI = "http://localhost/auth/google/callback"
IDENTITY = {
    "sub": "108234567890",
    "email": "grace@example.com",
    "email_verified": True,
    "name": "Grace Hopper",
    "given_name": "Grace",
    "family_name": "Hopper",
}


@pytest.fixture(autouse=True)
def _empty_database_after_test() -> None:
    """Overrides the conftest fixture of that name: these tests have no shop and no database."""


@pytest.fixture(scope="module")
def running_provider() -> Iterator[OIDCProvider]:
    with OIDCProvider(CLIENT_ID, CLIENT_SECRET) as provider:
        yield provider


@pytest.fixture
def provider(running_provider: OIDCProvider) -> OIDCProvider:
    running_provider.reset()
    running_provider.next_identity = dict(IDENTITY)
    return running_provider


def authorize(provider: OIDCProvider, **overrides: str | None) -> requests.Response:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": "st/ate+with spaces&odd=chars",
        "nonce": "n-0S6_WzA2Mj",
        "code_challenge": s256("v" * 50),
        "code_challenge_method": "S256",
        **overrides,
    }
    query = {key: value for key, value in params.items() if value is not None}
    return requests.get(
        f"{provider.base_url}/authorize", params=query, allow_redirects=False, timeout=10
    )


def redirect_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    return {key: values[0] for key, values in parse_qs(location.query).items()}


def get_code(provider: OIDCProvider, verifier: str, nonce: str = "n-0S6_WzA2Mj") -> str:
    params = redirect_params(authorize(provider, code_challenge=s256(verifier), nonce=nonce))
    return params["code"]


def exchange(
    provider: OIDCProvider, code: str, verifier: str, *, basic: bool = False, **extra: str
) -> requests.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        **extra,
    }
    auth = None
    if basic:
        auth = (CLIENT_ID, CLIENT_SECRET)
    else:
        form |= {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return requests.post(f"{provider.base_url}/token", data=form, auth=auth, timeout=10)


def published_keys(provider: OIDCProvider) -> KeySet:
    jwks = requests.get(f"{provider.base_url}/jwks", timeout=10).json()
    return KeySet.import_key_set(jwks)


def verify_id_token(provider: OIDCProvider, id_token: str, nonce: str) -> dict[str, Any]:
    token = jwt.decode(id_token, published_keys(provider), algorithms=["RS256"])
    JWTClaimsRegistry(
        iss={"essential": True, "value": provider.issuer},
        aud={"essential": True, "value": CLIENT_ID},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    ).validate(token.claims)
    return token.claims


def test_discovery_document_describes_the_provider(provider: OIDCProvider) -> None:
    response = requests.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=10)
    assert response.status_code == 200
    metadata = response.json()
    base = provider.base_url
    assert base.startswith("http://127.0.0.1:")
    assert metadata["issuer"] == provider.issuer == base
    assert metadata["authorization_endpoint"] == f"{base}/authorize"
    assert metadata["token_endpoint"] == f"{base}/token"
    assert metadata["userinfo_endpoint"] == f"{base}/userinfo"
    assert metadata["jwks_uri"] == f"{base}/jwks"
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["subject_types_supported"] == ["public"]
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["scopes_supported"] == ["openid", "email", "profile"]
    assert metadata["token_endpoint_auth_methods_supported"] == [
        "client_secret_post",
        "client_secret_basic",
    ]


def test_jwks_publishes_only_the_public_signing_key(provider: OIDCProvider) -> None:
    keys = requests.get(f"{provider.base_url}/jwks", timeout=10).json()["keys"]
    assert len(keys) == 1
    (key,) = keys
    assert key["kty"] == "RSA"
    assert key["kid"] == provider.key.kid
    assert key["alg"] == "RS256"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()


def test_authorize_redirects_with_a_code_and_the_unchanged_state(provider: OIDCProvider) -> None:
    params = redirect_params(authorize(provider))
    assert set(params) == {"code", "state"}
    assert params["state"] == "st/ate+with spaces&odd=chars"
    stored = provider.codes[params["code"]]
    assert stored.nonce == "n-0S6_WzA2Mj"
    assert stored.identity == IDENTITY
    assert stored.redirect_uri == REDIRECT_URI


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"scope": "email profile"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_bad_authorization_requests_come_back_with_an_error(
    provider: OIDCProvider, overrides: dict[str, str | None], error: str
) -> None:
    params = redirect_params(authorize(provider, **overrides))
    assert params["error"] == error
    assert params["state"] == "st/ate+with spaces&odd=chars"
    assert "code" not in params
    assert provider.codes == {}


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_id": "someone-else"},
        {"redirect_uri": None},
        {"redirect_uri": "javascript:alert(1)"},
        {"redirect_uri": "http://localhost/callback#fragment"},
    ],
)
def test_unknown_client_or_redirect_uri_is_refused_without_redirecting(
    provider: OIDCProvider, overrides: dict[str, str | None]
) -> None:
    response = authorize(provider, **overrides)
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_registered_redirect_uris_are_matched_exactly(provider: OIDCProvider) -> None:
    provider.redirect_uris = {REDIRECT_URI}
    try:
        assert authorize(provider).status_code == 302
        assert authorize(provider, redirect_uri=REDIRECT_URI + "/x").status_code == 400
    finally:
        provider.redirect_uris = None


def test_authorize_error_hook_simulates_a_user_who_declines(provider: OIDCProvider) -> None:
    provider.authorize_error = "access_denied"
    params = redirect_params(authorize(provider))
    assert params["error"] == "access_denied"
    assert params["state"] == "st/ate+with spaces&odd=chars"


@pytest.mark.parametrize("basic", [False, True], ids=["client_secret_post", "client_secret_basic"])
def test_code_exchange_returns_a_verifiable_id_token(provider: OIDCProvider, basic: bool) -> None:
    verifier = secrets.token_urlsafe(48)
    code = get_code(provider, verifier, nonce="abc123")
    response = exchange(provider, code, verifier, basic=basic)

    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    assert body["scope"] == "openid email profile"
    claims = verify_id_token(provider, body["id_token"], nonce="abc123")
    assert claims["iss"] == provider.issuer
    assert claims["aud"] == CLIENT_ID
    assert claims["nonce"] == "abc123"
    assert claims["at_hash"] == at_hash(body["access_token"])
    assert {key: claims[key] for key in IDENTITY} == IDENTITY
    assert jwt.decode(body["id_token"], published_keys(provider)).header["kid"] == provider.key.kid
    expected = "client_secret_basic" if basic else "client_secret_post"
    assert provider.token_requests[-1].auth_method == expected

    userinfo = requests.get(
        f"{provider.base_url}/userinfo",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=10,
    )
    assert userinfo.status_code == 200
    assert userinfo.json() == IDENTITY


def test_identity_is_taken_when_the_user_authorizes(provider: OIDCProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    code = get_code(provider, verifier)
    provider.next_identity = {"sub": "someone-later", "email": "later@example.com"}
    body = exchange(provider, code, verifier).json()
    claims = verify_id_token(provider, body["id_token"], nonce="n-0S6_WzA2Mj")
    assert claims["sub"] == IDENTITY["sub"]


def test_a_code_works_only_once(provider: OIDCProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    code = get_code(provider, verifier)
    assert exchange(provider, code, verifier).status_code == 200
    second = exchange(provider, code, verifier, basic=True)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"


def test_a_wrong_code_verifier_is_refused_and_burns_the_code(provider: OIDCProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    code = get_code(provider, verifier)
    wrong = exchange(provider, code, secrets.token_urlsafe(48))
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert exchange(provider, code, verifier).json()["error"] == "invalid_grant"


def test_a_missing_code_verifier_is_refused(provider: OIDCProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    response = exchange(provider, get_code(provider, verifier), "")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_the_redirect_uri_must_match_the_authorization(provider: OIDCProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    code = get_code(provider, verifier)
    response = exchange(provider, code, verifier, redirect_uri="http://localhost/elsewhere")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_a_code_expires_after_sixty_seconds(
    provider: OIDCProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = secrets.token_urlsafe(48)
    code = get_code(provider, verifier)
    issued = provider.codes[code].issued_at
    monkeypatch.setattr(provider, "clock", lambda: issued + 61)
    response = exchange(provider, code, verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("basic", [False, True], ids=["client_secret_post", "client_secret_basic"])
def test_a_wrong_client_secret_is_refused(provider: OIDCProvider, basic: bool) -> None:
    verifier = secrets.token_urlsafe(48)
    code = get_code(provider, verifier)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    if basic:
        response = requests.post(
            f"{provider.base_url}/token", data=form, auth=(CLIENT_ID, "nope"), timeout=10
        )
    else:
        form |= {"client_id": CLIENT_ID, "client_secret": "nope"}
        response = requests.post(f"{provider.base_url}/token", data=form, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert provider.codes[code]  # not consumed by an unauthenticated request


def test_userinfo_needs_a_valid_bearer_token(provider: OIDCProvider) -> None:
    response = requests.get(
        f"{provider.base_url}/userinfo", headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_requests_are_recorded(provider: OIDCProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    exchange(provider, get_code(provider, verifier), verifier)
    assert provider.requests == [("GET", "/authorize"), ("POST", "/token")]


def test_basic_credentials_are_form_decoded(provider: OIDCProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    code = get_code(provider, verifier)
    credentials = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    response = requests.post(
        f"{provider.base_url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        headers={"Authorization": f"Basic {credentials}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


# -- misbehaviour switches --------------------------------------------------------------------


def issue_id_token(provider: OIDCProvider) -> str:
    verifier = secrets.token_urlsafe(48)
    response = exchange(provider, get_code(provider, verifier), verifier)
    assert response.status_code == 200, response.text
    return response.json()["id_token"]


def test_sign_with_wrong_key_fails_signature_verification(provider: OIDCProvider) -> None:
    provider.sign_with_wrong_key = True
    id_token = issue_id_token(provider)
    with pytest.raises(BadSignatureError):
        jwt.decode(id_token, published_keys(provider), algorithms=["RS256"])


@pytest.mark.parametrize(("switch", "claim"), [("wrong_nonce", "nonce"), ("wrong_audience", "aud")])
def test_wrong_claims_fail_validation(provider: OIDCProvider, switch: str, claim: str) -> None:
    setattr(provider, switch, True)
    id_token = issue_id_token(provider)
    with pytest.raises(InvalidClaimError, match=claim):
        verify_id_token(provider, id_token, nonce="n-0S6_WzA2Mj")


def test_expired_id_token_fails_validation(provider: OIDCProvider) -> None:
    provider.expired_id_token = True
    id_token = issue_id_token(provider)
    with pytest.raises(ExpiredTokenError):
        verify_id_token(provider, id_token, nonce="n-0S6_WzA2Mj")


def test_a_hanging_endpoint_answers_nothing_until_reset(provider: OIDCProvider) -> None:
    provider.hanging = {"discovery"}
    with pytest.raises(requests.ReadTimeout):
        requests.get(provider.metadata_url, timeout=0.5)
    assert requests.get(f"{provider.base_url}/jwks", timeout=10).status_code == 200
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(requests.get, provider.metadata_url, timeout=10)
        with pytest.raises(TimeoutError):
            waiting.result(timeout=0.5)
        provider.reset()
        assert waiting.result().status_code == 200
    assert requests.get(provider.metadata_url, timeout=10).status_code == 200


def test_a_slow_endpoint_answers_after_its_delay(provider: OIDCProvider) -> None:
    provider.slow = {"token": 0.5}
    with pytest.raises(requests.ReadTimeout):
        requests.post(f"{provider.base_url}/token", timeout=0.1)
    assert requests.post(f"{provider.base_url}/token", timeout=10).status_code == 401


@pytest.mark.parametrize("status", [200, 500, 503])
def test_a_failing_endpoint_answers_with_an_html_error_page(
    provider: OIDCProvider, status: int
) -> None:
    provider.failing = {"discovery": status}
    response = requests.get(provider.metadata_url, timeout=10)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(requests.JSONDecodeError):
        response.json()
    assert requests.get(f"{provider.base_url}/jwks", timeout=10).json()["keys"]


def test_down_refuses_connections_then_serves_the_same_keys_on_the_same_port(
    provider: OIDCProvider,
) -> None:
    base_url, jwks = provider.base_url, published_keys(provider).as_dict()
    with provider.down(), pytest.raises(requests.ConnectionError):
        requests.get(provider.metadata_url, timeout=10)
    assert provider.base_url == base_url
    assert published_keys(provider).as_dict() == jwks


def test_discovery_changes_replace_or_remove_fields(provider: OIDCProvider) -> None:
    provider.discovery_changes = {"issuer": "https://elsewhere.example", "jwks_uri": None}
    metadata = requests.get(provider.metadata_url, timeout=10).json()
    assert metadata["issuer"] == "https://elsewhere.example"
    assert "jwks_uri" not in metadata
    assert metadata["token_endpoint"] == f"{provider.base_url}/token"


def test_advertised_algorithms_are_listed_or_left_out(provider: OIDCProvider) -> None:
    provider.advertised_algorithms = ["RS256", "none"]
    metadata = requests.get(provider.metadata_url, timeout=10).json()
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256", "none"]
    provider.advertised_algorithms = None
    metadata = requests.get(provider.metadata_url, timeout=10).json()
    assert "id_token_signing_alg_values_supported" not in metadata


def test_none_id_tokens_are_unsigned(provider: OIDCProvider) -> None:
    provider.id_token_alg = "none"
    header, payload, signature = issue_id_token(provider).split(".")
    assert signature == ""
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "none", "typ": "JWT"}
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert claims["sub"] == IDENTITY["sub"]
    assert "at_hash" not in claims


def test_hs256_id_tokens_verify_with_the_shared_key_the_jwks_publishes(
    provider: OIDCProvider,
) -> None:
    provider.id_token_alg = "HS256"
    id_token = issue_id_token(provider)
    keys = published_keys(provider)
    assert {key["kty"] for key in keys.as_dict()["keys"]} == {"RSA", "oct"}
    assert jwt.decode(id_token, keys, algorithms=["HS256"]).claims["sub"] == IDENTITY["sub"]
    with pytest.raises(UnsupportedAlgorithmError):
        jwt.decode(id_token, keys, algorithms=["RS256"])


# -- Authlib as the client ---------------------------------------------------------------------


@pytest.mark.parametrize("auth_method", ["client_secret_post", "client_secret_basic"])
def test_authlib_requests_client_accepts_the_provider(
    provider: OIDCProvider, auth_method: str
) -> None:
    metadata = requests.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=10)
    metadata = metadata.json()
    session = OAuth2Session(
        CLIENT_ID,
        CLIENT_SECRET,
        scope="openid email profile",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        token_endpoint_auth_method=auth_method,
    )
    verifier = secrets.token_urlsafe(48)
    url, state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce="authlib-nonce"
    )
    response = requests.get(url, allow_redirects=False, timeout=10)
    callback = response.headers["Location"]
    token = session.fetch_token(
        metadata["token_endpoint"],
        authorization_response=callback,
        state=state,
        code_verifier=verifier,
    )
    assert provider.token_requests[-1].auth_method == auth_method

    decoded = jwt.decode(token["id_token"], published_keys(provider), algorithms=["RS256"])
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        {"iss": {"essential": True, "value": provider.issuer}},
        {"nonce": "authlib-nonce", "client_id": CLIENT_ID, "access_token": token["access_token"]},
    )
    claims.validate()
    assert claims["email"] == IDENTITY["email"]


def make_flask_client_app(
    provider: OIDCProvider, claims_options: dict[str, Any] | None = None
) -> tuple[Flask, dict[str, Any]]:
    """A throwaway app wired the way the shop registers Google."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="throwaway", TESTING=True)
    oauth = OAuth(app)
    oauth.register(
        name="google",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        server_metadata_url=f"{provider.issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
    )
    outcome: dict[str, Any] = {}

    @app.get("/login")
    def login():
        return oauth.google.authorize_redirect(url_for("callback", _external=True))

    @app.get("/auth/google/callback")
    def callback():
        try:
            options = (
                None if claims_options is None else {k: dict(v) for k, v in claims_options.items()}
            )
            outcome["token"] = oauth.google.authorize_access_token(claims_options=options)
        except Exception as exc:  # the test inspects it
            outcome["error"] = exc
            return "refused", 400
        return "signed in"

    return app, outcome


def sign_in(app: Flask, provider: OIDCProvider) -> int:
    client = app.test_client()
    login = client.get("/login")
    assert login.status_code == 302
    callback = urlsplit(provider.authorize(login.headers["Location"]))
    return client.get(f"{callback.path}?{callback.query}").status_code


def test_authlib_flask_client_signs_in_without_warnings(provider: OIDCProvider) -> None:
    app, outcome = make_flask_client_app(provider)
    assert sign_in(app, provider) == 200
    userinfo = outcome["token"]["userinfo"]
    assert {key: userinfo[key] for key in IDENTITY} == IDENTITY
    assert outcome["token"]["id_token"]


@pytest.mark.parametrize(
    ("switch", "error"),
    [
        ("sign_with_wrong_key", "bad_signature"),
        ("wrong_nonce", "nonce"),
        ("expired_id_token", "expired_token"),
        # Authlib 1.9 checks aud only indirectly: a foreign aud makes azp required.
        ("wrong_audience", "azp"),
        ("authorize_error", "access_denied"),
    ],
)
def test_authlib_flask_client_refuses_a_misbehaving_provider(
    provider: OIDCProvider, switch: str, error: str
) -> None:
    setattr(provider, switch, "access_denied" if switch == "authorize_error" else True)
    app, outcome = make_flask_client_app(provider)
    assert sign_in(app, provider) == 400
    assert error in str(outcome["error"])


def test_authlib_checks_aud_only_when_told_to(provider: OIDCProvider) -> None:
    """With azp present (Google sends it), Authlib 1.9 accepts a foreign aud by default."""
    provider.wrong_audience = True
    provider.include_azp = True
    app, outcome = make_flask_client_app(provider)
    assert sign_in(app, provider) == 200

    strict = {
        "iss": {"essential": True, "value": provider.issuer},
        "aud": {"essential": True, "value": CLIENT_ID},
    }
    app, outcome = make_flask_client_app(provider, claims_options=strict)
    assert sign_in(app, provider) == 400
    assert "aud" in str(outcome["error"])
