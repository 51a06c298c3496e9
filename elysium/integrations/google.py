"""Google sign-in over OpenID Connect (Authlib): state, nonce and PKCE live in the session."""

from __future__ import annotations

from typing import Any

import requests
from authlib.integrations.base_client import OAuthError
from flask import Flask, current_app
from joserfc.errors import JoseError

from elysium.extensions import oauth

PROVIDER = "google"


class GoogleSignInError(Exception):
    """The provider's answer could not be trusted or used."""


def init_app(app: Flask) -> None:
    oauth.init_app(app)
    if enabled(app):
        oauth.register(
            name=PROVIDER,
            client_id=app.config["GOOGLE_CLIENT_ID"],
            client_secret=app.config["GOOGLE_CLIENT_SECRET"],
            server_metadata_url=f"{app.config['GOOGLE_ISSUER']}/.well-known/openid-configuration",
            client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
            overwrite=True,
        )


def enabled(app: Flask | None = None) -> bool:
    config = (app or current_app).config
    return bool(config.get("GOOGLE_CLIENT_ID") and config.get("GOOGLE_CLIENT_SECRET"))


def authorize_redirect(redirect_uri: str):
    """The redirect to the provider; Authlib keeps state, nonce and the PKCE verifier."""
    return oauth.create_client(PROVIDER).authorize_redirect(redirect_uri)


def verified_claims() -> dict[str, Any]:
    """Finish the callback: check state, swap the code, and check the ID token's claims."""
    client = oauth.create_client(PROVIDER)
    try:
        token = client.authorize_access_token(
            claims_options={
                "iss": {"essential": True, "value": current_app.config["GOOGLE_ISSUER"]},
                "aud": {"essential": True, "value": current_app.config["GOOGLE_CLIENT_ID"]},
                "sub": {"essential": True},
            }
        )
    except (OAuthError, JoseError, requests.RequestException, ValueError, KeyError) as error:
        raise GoogleSignInError(str(error)) from error
    claims = token.get("userinfo")
    if not claims or not claims.get("sub"):
        raise GoogleSignInError("no identity in the ID token")
    return dict(claims)
