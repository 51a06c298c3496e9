"""A tiny OpenID Connect provider for tests, served on 127.0.0.1 from a background thread.

It stands in for Google: discovery, JWKS, an authorization endpoint that "logs in" at once
as ``provider.next_identity``, a token endpoint (authorization code + PKCE S256, client
authentication by ``client_secret_post`` or ``client_secret_basic``) and a userinfo endpoint.

    with OIDCProvider(client_id="shop", client_secret="s3cret") as provider:
        provider.next_identity = {"sub": "1", "email": "a@example.com", ...}
        ...  # point the app at f"{provider.issuer}/.well-known/openid-configuration"

Negative-test switches (all ``False`` by default): ``sign_with_wrong_key``, ``wrong_nonce``,
``wrong_audience``, ``expired_id_token``; ``authorize_error`` (e.g. ``"access_denied"``) makes
the next authorization requests come back with that error instead of a code.

Outages, by endpoint name (``"discovery"``, ``"jwks"``, ``"authorize"``, ``"token"``,
``"userinfo"``): ``slow`` maps a name to seconds to wait before answering; ``hanging`` holds
those requests without answering until ``reset()`` or ``stop()`` (at most ``HANG_SECONDS``);
``failing`` maps a name to the status it answers with instead (``{"discovery": 503}``), with
an HTML error page as a gateway would send.
``with provider.down():`` closes the port, so connections are refused, and opens the same port
again afterwards (same keys, same codes).

``discovery_changes`` replaces fields of the discovery document (a ``None`` value leaves the
field out), e.g. ``{"issuer": "https://elsewhere.example"}`` or ``{"jwks_uri": None}``.

Algorithms: ``advertised_algorithms`` is what the discovery document lists in
``id_token_signing_alg_values_supported`` (``None`` leaves the field out); ``id_token_alg`` is
how ID tokens are signed: ``"RS256"`` (the default), ``"none"`` (unsigned) or ``"HS256"`` with a
shared key that the JWKS then publishes, so anyone who reads it could mint tokens.

``include_azp`` adds ``azp`` = client_id to ID tokens, as Google does. Note that Authlib 1.9's
``parse_id_token`` does not check ``aud`` by itself: it only notices a foreign ``aud`` because
``azp`` is then required. With ``wrong_audience`` and ``include_azp`` both on, a client that does
not pass ``claims_options={"aud": {"essential": True, "value": client_id}, ...}`` accepts the
token, which is what a test of the application's own audience check needs.

Plain Werkzeug, no Flask: nothing here touches an application or request context.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

DEFAULT_IDENTITY: dict[str, Any] = {
    "sub": "1234567890",
    "email": "ada@example.com",
    "email_verified": True,
    "name": "Ada Lovelace",
    "given_name": "Ada",
    "family_name": "Lovelace",
}

CODE_TTL = 60
ACCESS_TOKEN_TTL = 3600
ID_TOKEN_TTL = 3600
SUPPORTED_SCOPES = ("openid", "email", "profile")
AUTH_METHODS = ("client_secret_post", "client_secret_basic")
ID_TOKEN_ALGORITHMS = ("RS256", "HS256", "none")
# A hanging request is let go after this long even if nobody resets or stops the provider.
HANG_SECONDS = 30


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge of ``verifier`` (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def at_hash(access_token: str) -> str:
    """The ``at_hash`` of an access token for an RS256 ID token (OIDC Core 3.1.3.6)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def add_query(uri: str, params: dict[str, str]) -> str:
    """``uri`` with ``params`` appended to its query string."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass
class AuthorizationCode:
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str
    identity: dict[str, Any]
    issued_at: float


@dataclass
class AccessToken:
    client_id: str
    scope: str
    identity: dict[str, Any]
    expires_at: float


@dataclass
class TokenRequest:
    """What the token endpoint received, for assertions in tests."""

    auth_method: str | None
    form: dict[str, str] = field(default_factory=dict)


class QuietRequestHandler(WSGIRequestHandler):
    """No access log on stderr; ``provider.requests`` records what was asked."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class OAuthError(Exception):
    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(error, description)
        self.error = error
        self.description = description
        self.status = status


class OIDCProvider:
    """A single-client OpenID Connect provider. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        client_id: str = "test-client-id",
        client_secret: str = "test-client-secret",  # noqa: S107 - a test fixture
        *,
        redirect_uris: Iterable[str] | None = None,
        token_endpoint_auth_methods: Collection[str] = AUTH_METHODS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        unknown = set(token_endpoint_auth_methods) - set(AUTH_METHODS)
        if unknown:
            raise ValueError(f"unsupported client authentication methods: {sorted(unknown)}")
        self.client_id = client_id
        self.client_secret = client_secret
        # None accepts any absolute http(s) redirect URI; otherwise an exact-match allow-list.
        self.redirect_uris: set[str] | None = None if redirect_uris is None else set(redirect_uris)
        self.token_endpoint_auth_methods = tuple(token_endpoint_auth_methods)
        self.host = host
        self.port = port

        self.next_identity: dict[str, Any] = dict(DEFAULT_IDENTITY)
        self.requests: list[tuple[str, str]] = []
        self.token_requests: list[TokenRequest] = []
        self.code_ttl: float = CODE_TTL
        self.clock: Callable[[], float] = time.time

        self.sign_with_wrong_key = False
        self.wrong_nonce = False
        self.wrong_audience = False
        self.expired_id_token = False
        self.authorize_error: str | None = None
        # Google puts azp (= client_id) in its ID tokens; off by default. See the module doc.
        self.include_azp = False

        self.slow: dict[str, float] = {}
        self.hanging: set[str] = set()
        self.failing: dict[str, int] = {}
        self.discovery_changes: dict[str, Any] = {}
        self.advertised_algorithms: list[str] | None = ["RS256"]
        self.id_token_alg = "RS256"
        self._released = threading.Event()

        self.key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"})
        self.key.ensure_kid()
        # Same kid as the real key, so a client picks the published key and the signature fails.
        self.wrong_key = RSAKey.generate_key(
            2048, parameters={"use": "sig", "alg": "RS256", "kid": self.key.kid}
        )
        self.shared_key = OctKey.generate_key(256, parameters={"use": "sig", "alg": "HS256"})
        self.shared_key.ensure_kid()

        self.codes: dict[str, AuthorizationCode] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._url_map = Map(
            [
                Rule("/.well-known/openid-configuration", endpoint="discovery", methods=["GET"]),
                Rule("/jwks", endpoint="jwks", methods=["GET"]),
                Rule("/authorize", endpoint="authorize", methods=["GET"]),
                Rule("/token", endpoint="token", methods=["POST"]),
                Rule("/userinfo", endpoint="userinfo", methods=["GET", "POST"]),
            ]
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> OIDCProvider:
        """Serve; after a ``stop()``, on the same port again."""
        if self._server is not None:
            raise RuntimeError("provider already started")
        self._server = make_server(
            self.host,
            self.port,
            self.wsgi_app,
            threaded=True,
            request_handler=QuietRequestHandler,
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="test-oidc-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release_hanging()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @contextmanager
    def down(self) -> Iterator[None]:
        """Closed while the block runs (connections are refused), then serving again."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _release_hanging(self) -> None:
        released, self._released = self._released, threading.Event()
        released.set()

    def __enter__(self) -> OIDCProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Known from the first ``start()`` on, also while the provider is ``down()``."""
        if self.port == 0:
            raise RuntimeError("provider not started")
        return f"http://{self.host}:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def reset(self) -> None:
        """Forget codes, tokens and recorded requests; switch every misbehaviour off."""
        with self._lock:
            self.codes.clear()
            self.access_tokens.clear()
            self.requests.clear()
            self.token_requests.clear()
        self.next_identity = dict(DEFAULT_IDENTITY)
        self.sign_with_wrong_key = self.wrong_nonce = False
        self.wrong_audience = self.expired_id_token = False
        self.authorize_error = None
        self.include_azp = False
        self.slow = {}
        self.hanging = set()
        self.failing = {}
        self.discovery_changes = {}
        self.advertised_algorithms = ["RS256"]
        self.id_token_alg = "RS256"
        self._release_hanging()

    def public_jwks(self) -> dict[str, Any]:
        keys = [self.key.as_dict(private=False)]
        if self.id_token_alg == "HS256":
            keys.append(self.shared_key.as_dict())  # the misconfiguration: a secret made public
        return {"keys": keys}

    def authorize(self, authorization_url: str) -> str:
        """Play the browser at the authorization endpoint: GET the URL, return the redirect.

        Handy for driving an app through Flask's test client: take the Location of the app's
        "sign in with Google" response, pass it here, then GET the returned callback URL.
        """
        import requests  # a test dependency; only needed by this helper

        response = requests.get(authorization_url, allow_redirects=False, timeout=10)
        if response.status_code != 302:
            raise AssertionError(
                f"authorization endpoint answered {response.status_code}: {response.text}"
            )
        return response.headers["Location"]

    # -- WSGI --------------------------------------------------------------------------------

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        with self._lock:
            self.requests.append((request.method, request.path))
        adapter = self._url_map.bind_to_environ(environ)
        try:
            endpoint, _ = adapter.match()
            if endpoint in self.slow:
                time.sleep(self.slow[endpoint])
            if endpoint in self.hanging:
                self._released.wait(HANG_SECONDS)
            if endpoint in self.failing:
                response = outage_page(self.failing[endpoint])
            else:
                response = getattr(self, f"_{endpoint}")(request)
        except (NotFound, MethodNotAllowed) as exc:
            response = exc.get_response(environ)
        except HTTPException as exc:  # pragma: no cover - defensive
            response = exc.get_response(environ)
        return response(environ, start_response)

    def _discovery(self, request: Request) -> Response:
        base = self.base_url
        document: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "userinfo_endpoint": f"{base}/userinfo",
            "jwks_uri": f"{base}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": self.advertised_algorithms,
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": list(SUPPORTED_SCOPES),
            "token_endpoint_auth_methods_supported": list(self.token_endpoint_auth_methods),
            "grant_types_supported": ["authorization_code"],
            "claims_supported": [
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "nonce",
                "at_hash",
                "email",
                "email_verified",
                "name",
                "given_name",
                "family_name",
            ],
        }
        document |= self.discovery_changes
        return json_response({name: value for name, value in document.items() if value is not None})

    def _jwks(self, request: Request) -> Response:
        return json_response(self.public_jwks())

    # -- authorization endpoint ---------------------------------------------------------------

    def _redirect_uri_allowed(self, redirect_uri: str) -> bool:
        if self.redirect_uris is not None:
            return redirect_uri in self.redirect_uris
        parts = urlsplit(redirect_uri)
        return parts.scheme in {"http", "https"} and bool(parts.netloc) and not parts.fragment

    def _authorize(self, request: Request) -> Response:
        args = request.args
        client_id = args.get("client_id")
        redirect_uri = args.get("redirect_uri")
        if client_id != self.client_id:
            return error_page("unknown client_id")
        if not redirect_uri or not self._redirect_uri_allowed(redirect_uri):
            return error_page("missing or unregistered redirect_uri")

        state = args.get("state")

        def fail(error: str, description: str) -> Response:
            params = {"error": error, "error_description": description}
            if state is not None:
                params["state"] = state
            return redirect(add_query(redirect_uri, params))

        if args.get("response_type") != "code":
            return fail("unsupported_response_type", "only response_type=code is supported")
        scopes = (args.get("scope") or "").split()
        if "openid" not in scopes:
            return fail("invalid_scope", "scope must contain openid")
        unknown = [scope for scope in scopes if scope not in SUPPORTED_SCOPES]
        if unknown:
            return fail("invalid_scope", f"unsupported scope: {' '.join(unknown)}")
        challenge = args.get("code_challenge")
        if not challenge:
            return fail("invalid_request", "PKCE is required: code_challenge is missing")
        if args.get("code_challenge_method") != "S256":
            return fail("invalid_request", "code_challenge_method must be S256")
        if self.authorize_error:
            return fail(self.authorize_error, "the test provider was told to refuse")

        code = secrets.token_urlsafe(32)
        with self._lock:
            self.codes[code] = AuthorizationCode(
                client_id=client_id,
                redirect_uri=redirect_uri,
                scope=" ".join(scopes),
                nonce=args.get("nonce"),
                code_challenge=challenge,
                identity=dict(self.next_identity),
                issued_at=self.clock(),
            )
        params = {"code": code}
        if state is not None:
            params["state"] = state
        return redirect(add_query(redirect_uri, params))

    # -- token endpoint -------------------------------------------------------------------------

    def _authenticate_client(self, request: Request) -> str:
        header = request.headers.get("Authorization", "")
        posted_secret = request.form.get("client_secret")
        if header:
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() != "basic":
                raise OAuthError("invalid_client", "unsupported Authorization scheme", 401)
            if posted_secret is not None:
                raise OAuthError("invalid_request", "use one client authentication method")
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except ValueError as exc:
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from exc
            raw_id, sep, raw_secret = decoded.partition(":")
            if not sep:
                raise OAuthError("invalid_client", "malformed Basic credentials", 401)
            # RFC 6749 2.3.1: both parts are form-urlencoded before being joined.
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            method = "client_secret_basic"
        elif posted_secret is not None:
            client_id, secret = request.form.get("client_id", ""), posted_secret
            method = "client_secret_post"
        else:
            raise OAuthError("invalid_client", "client authentication is required", 401)

        if method not in self.token_endpoint_auth_methods:
            raise OAuthError("invalid_client", f"{method} is not allowed", 401)
        form_client_id = request.form.get("client_id")
        if form_client_id is not None and form_client_id != client_id:
            raise OAuthError("invalid_client", "client_id does not match credentials", 401)
        if not (
            secrets.compare_digest(client_id.encode(), self.client_id.encode())
            and secrets.compare_digest(secret.encode(), self.client_secret.encode())
        ):
            raise OAuthError("invalid_client", "bad client credentials", 401)
        return method

    def _token(self, request: Request) -> Response:
        auth_method = None
        try:
            auth_method = self._authenticate_client(request)
            return self._exchange_code(request)
        except OAuthError as exc:
            body = {"error": exc.error}
            if exc.description:
                body["error_description"] = exc.description
            response = json_response(body, exc.status)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="test-oidc-provider"'
            return response
        finally:
            form = {key: request.form[key] for key in request.form}
            with self._lock:
                self.token_requests.append(TokenRequest(auth_method, form))

    def _exchange_code(self, request: Request) -> Response:
        form = request.form
        if form.get("grant_type") != "authorization_code":
            raise OAuthError("unsupported_grant_type", "only authorization_code is supported")
        code = form.get("code")
        if not code:
            raise OAuthError("invalid_request", "code is missing")
        with self._lock:
            grant = self.codes.pop(code, None)  # single use, even when the exchange fails
        if grant is None:
            raise OAuthError("invalid_grant", "unknown, used or expired code")
        now = self.clock()
        if now - grant.issued_at > self.code_ttl:
            raise OAuthError("invalid_grant", "code expired")
        if grant.client_id != self.client_id:  # pragma: no cover - one client only
            raise OAuthError("invalid_grant", "code was issued to another client")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization")
        verifier = form.get("code_verifier")
        if not verifier:
            raise OAuthError("invalid_request", "code_verifier is missing")
        if not 43 <= len(verifier) <= 128:
            raise OAuthError("invalid_request", "code_verifier must be 43 to 128 characters")
        if not secrets.compare_digest(s256(verifier), grant.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match code_challenge")

        access_token = secrets.token_urlsafe(32)
        with self._lock:
            self.access_tokens[access_token] = AccessToken(
                client_id=grant.client_id,
                scope=grant.scope,
                identity=grant.identity,
                expires_at=now + ACCESS_TOKEN_TTL,
            )
        body = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_TTL,
            "id_token": self.make_id_token(grant, access_token, now),
            "scope": grant.scope,
        }
        return json_response(body)

    def make_id_token(self, grant: AuthorizationCode, access_token: str, now: float) -> str:
        issued_at = int(now)
        if self.expired_id_token:
            issued_at -= 2 * ID_TOKEN_TTL  # far beyond any client leeway
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": grant.identity["sub"],
            "aud": "some-other-client" if self.wrong_audience else grant.client_id,
            "iat": issued_at,
            "exp": issued_at + ID_TOKEN_TTL,
            "auth_time": issued_at,
        }
        if self.id_token_alg != "none":  # at_hash is a hash named by alg: "none" names none
            claims["at_hash"] = at_hash(access_token)
        if self.include_azp:
            claims["azp"] = grant.client_id
        if grant.nonce is not None or self.wrong_nonce:
            claims["nonce"] = "not-the-nonce-you-sent" if self.wrong_nonce else grant.nonce
        for name in ("email", "email_verified", "name", "given_name", "family_name"):
            if name in grant.identity:
                claims[name] = grant.identity[name]
        return self.sign(claims)

    def sign(self, claims: dict[str, Any]) -> str:
        """An ID token as ``id_token_alg`` (and ``sign_with_wrong_key``) say."""
        if self.id_token_alg == "none":
            # By hand: joserfc warns (an error in the suite) whenever "none" is used at all.
            header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            return f"{header}.{b64url(json.dumps(claims).encode())}."
        if self.id_token_alg == "HS256":
            header = {"alg": "HS256", "kid": self.shared_key.kid, "typ": "JWT"}
            return jwt.encode(header, claims, self.shared_key, algorithms=["HS256"])
        if self.id_token_alg != "RS256":
            raise ValueError(f"id_token_alg must be one of {ID_TOKEN_ALGORITHMS}")
        key = self.wrong_key if self.sign_with_wrong_key else self.key
        header = {"alg": "RS256", "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key, algorithms=["RS256"])

    # -- userinfo endpoint ----------------------------------------------------------------------

    def _userinfo(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            record = self.access_tokens.get(token) if scheme.lower() == "bearer" else None
        if record is None or record.expires_at < self.clock():
            response = json_response({"error": "invalid_token"}, 401)
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        return json_response(dict(record.identity))


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(location: str) -> Response:
    return Response("", status=302, headers={"Location": location})


def outage_page(status: int) -> Response:
    """What a provider's gateway answers while it is down: HTML, not the JSON asked for."""
    body = f"<!doctype html><title>Error {status}</title><p>The server is unavailable.</p>"
    return Response(body, status=status, mimetype="text/html")


def error_page(message: str) -> Response:
    return Response(f"invalid request: {message}", status=400, mimetype="text/plain")
