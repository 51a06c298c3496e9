"""Google sign-in over OpenID Connect (Authlib's Flask client): state, nonce and the PKCE
verifier live in the session.

Google can be slow or down, so every call to it (discovery document, token, keys) waits at
most ``GOOGLE_TIMEOUT_SECONDS``, and whatever goes wrong reaches the view as one error,
``GoogleSignInError``, which says whether Google was unavailable or its answer was refused.

Each app (each worker process) keeps the discovery document and the keys once they have loaded;
a load that failed keeps nothing, so the next sign-in simply asks again and a worker recovers
by itself when Google does. ID tokens are accepted signed with RS256 only, whatever the
discovery document advertises.
"""

from __future__ import annotations

import time
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import FlaskIntegration, FlaskOAuth2App
from flask import Flask, current_app
from joserfc.errors import JoseError
from werkzeug.wrappers import Response

from elysium.config import ConfigurationError

PROVIDER = "google"
EXTENSION = "elysium.google"
# What Google signs ID tokens with. Authlib would take the list from the discovery document,
# so a provider (or whoever answers in its name) advertising "none" or HS256 would get
# unsigned or forged tokens accepted.
ID_TOKEN_ALGORITHMS = ("RS256",)
REQUIRED_METADATA = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")

UNAVAILABLE = (
    "Google sign-in is unavailable at the moment. Please try again in a little while, "
    "or sign in with your password."
)
DIDNT_COMPLETE = "Google sign-in didn't complete. Please try again."


class GoogleSignInError(Exception):
    """Sign-in with Google could not finish. ``unavailable``: Google could not be reached or
    failed to answer (worth trying again later); otherwise its answer was refused."""

    def __init__(self, reason: str, *, unavailable: bool = False) -> None:
        super().__init__(reason)
        self.unavailable = unavailable

    @property
    def message(self) -> str:
        """What the shopper is told."""
        return UNAVAILABLE if self.unavailable else DIDNT_COMPLETE


class GoogleClient(FlaskOAuth2App):
    """Authlib's Flask client, with a discovery document that is checked before it is kept
    and an ID token algorithm that the document cannot change."""

    def __init__(self, issuer: str, **kwargs: Any) -> None:
        super().__init__(FlaskIntegration(PROVIDER), PROVIDER, **kwargs)
        self.issuer = issuer

    def load_server_metadata(self) -> dict[str, Any]:
        """The discovery document, fetched the first time it is needed. It is kept only once
        it has loaded and makes sense (Authlib would keep a ``{}`` a proxy answered with, and
        fail on it for as long as the worker lives)."""
        if "_loaded_at" not in self.server_metadata:
            with self._get_session() as session:
                response = session.request("GET", self._server_metadata_url, withhold_token=True)
                response.raise_for_status()
                document = response.json()
            if not isinstance(document, dict) or not all(
                document.get(name) for name in REQUIRED_METADATA
            ):
                raise GoogleSignInError("incomplete discovery document", unavailable=True)
            if document["issuer"] != self.issuer:
                raise GoogleSignInError(
                    f"discovery document of issuer {document['issuer']!r}, not {self.issuer!r}",
                    unavailable=True,
                )
            self.server_metadata.update(
                document,
                id_token_signing_alg_values_supported=ID_TOKEN_ALGORITHMS,
                _loaded_at=time.time(),
            )
        return self.server_metadata


def init_app(app: Flask) -> None:
    """One client per app: its cached discovery document and keys are the app's own."""
    if not enabled(app):
        return
    if app.config["GOOGLE_TIMEOUT_SECONDS"] < 1:
        # Authlib takes 0 as "no timeout", which would wait for ever.
        raise ConfigurationError("GOOGLE_TIMEOUT_SECONDS must be at least 1")
    issuer = app.config["GOOGLE_ISSUER"]
    app.extensions[EXTENSION] = GoogleClient(
        issuer,
        client_id=app.config["GOOGLE_CLIENT_ID"],
        client_secret=app.config["GOOGLE_CLIENT_SECRET"],
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={
            "scope": "openid email profile",
            "code_challenge_method": "S256",
            "default_timeout": app.config["GOOGLE_TIMEOUT_SECONDS"],
        },
    )


def enabled(app: Flask | None = None) -> bool:
    config = (app or current_app).config
    return bool(config.get("GOOGLE_CLIENT_ID") and config.get("GOOGLE_CLIENT_SECRET"))


def _client() -> GoogleClient:
    return current_app.extensions[EXTENSION]


def authorize_redirect(redirect_uri: str) -> Response:
    """The redirect to Google; Authlib keeps state, nonce and the PKCE verifier."""
    try:
        return _client().authorize_redirect(redirect_uri)
    except requests.RequestException as error:
        raise GoogleSignInError(str(error), unavailable=True) from error


def verified_claims() -> dict[str, Any]:
    """Finish the callback: check state, swap the code, and check the ID token and its claims."""
    try:
        token = _client().authorize_access_token(
            claims_options={
                "iss": {"essential": True, "value": current_app.config["GOOGLE_ISSUER"]},
                "aud": {"essential": True, "value": current_app.config["GOOGLE_CLIENT_ID"]},
                "sub": {"essential": True},
            }
        )
    except requests.RequestException as error:  # first: a bad JSON answer is a ValueError too
        raise GoogleSignInError(str(error), unavailable=True) from error
    except (AuthlibBaseError, JoseError, ValueError, KeyError) as error:
        raise GoogleSignInError(str(error)) from error
    claims = token.get("userinfo")
    if not claims or not claims.get("sub"):
        raise GoogleSignInError("no identity in the ID token")
    return dict(claims)
