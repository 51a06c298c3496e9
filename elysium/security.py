"""Security headers on every response, the Content-Security-Policy, and prefixed cookies
that keep their prefix's promise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Flask, Response
from werkzeug.datastructures import Headers

from elysium.config import HOST_COOKIE_PREFIX

# How far apart two servers' clocks may be: a value one of them stamped "now" is not in the
# future for the other beyond this (timestamps are whole seconds, so even a few milliseconds
# apart can read as a second ahead). Every signed, dated cookie allows it.
CLOCKS_APART_SECONDS = 60

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

SECURE_PREFIXES = (HOST_COOKIE_PREFIX, "__Secure-")

STRIPE_CHECKOUT_ORIGIN = "https://checkout.stripe.com"
SANITY_CDN_ORIGIN = "https://cdn.sanity.io"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(app: Flask) -> str:
    """The policy for this app: forms may also lead to Stripe's payment page (after the
    checkout POST answers 303 there), and to the local fake's while it stands in for Stripe;
    images may also come from Sanity's CDN, only when the catalogue comes from Sanity."""
    form_action = ["'self'", STRIPE_CHECKOUT_ORIGIN]
    if api_base := app.config.get("STRIPE_API_BASE"):
        form_action.append(_origin(api_base))
    img_src = ["'self'", "data:"]
    if app.config.get("SANITY_PROJECT_ID"):
        img_src.append(SANITY_CDN_ORIGIN)
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src " + " ".join(img_src),
            "font-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action " + " ".join(form_action),
            "frame-ancestors 'none'",
        ]
    )


class ShopResponse(Response):
    """A response whose ``__Host-``/``__Secure-`` cookies are always Secure, and that no
    shared cache keeps when it sets a cookie.

    A browser ignores a Set-Cookie for such a name without ``Secure``, deletions included, and
    Flask-Login deletes its remember cookie without it: signing out would leave the cookie.
    """

    def set_cookie(self, key: str, *args: Any, **kwargs: Any) -> None:
        if key.startswith(SECURE_PREFIXES):
            kwargs["secure"] = True
        super().set_cookie(key, *args, **kwargs)

    def get_wsgi_headers(self, environ: WSGIEnvironment) -> Headers:
        """The headers as sent: an answer that sets a cookie is never public. A cookie is one
        browser's own (a bag's token moved to its new name on a static file's answer, say),
        and no shared cache may keep it for others. Checked here, once every hook and the
        session have set theirs."""
        headers = super().get_wsgi_headers(environ)
        if "Set-Cookie" in headers and "public" in headers.get("Cache-Control", ""):
            headers["Cache-Control"] = "private, no-store"
        return headers


# A page whose address holds a secret (a confirmation, reset or welcome link's token, a guest
# order's or a quote's): its address goes to no other site, even as an origin. It still goes
# to the shop itself: over https, a form's post without it is refused as a forgery
# (``WTF_CSRF_SSL_STRICT``), which "no-referrer" made of every form on those pages.
ADDRESS_KEPT_HERE_POLICY = "same-origin"


def keep_the_address_here(response: Response) -> Response:
    """``response``, whose page's address holds a secret, tells the browser not to send its
    address to any other site (:data:`ADDRESS_KEPT_HERE_POLICY`)."""
    response.headers["Referrer-Policy"] = ADDRESS_KEPT_HERE_POLICY
    return response


def register_security_headers(app: Flask) -> None:
    app.response_class = ShopResponse
    fixed = [
        ("Content-Security-Policy", content_security_policy(app)),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
    ]
    if app.config["ELYSIUM_ENV"] == "production":
        fixed.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))
    lowered = [(name.lower(), name, value) for name, value in fixed]

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        """Each header unless the response set its own (one look at what it has: this runs
        on every response)."""
        headers = response.headers
        present = {name.lower() for name, _ in headers}
        for key, name, value in lowered:
            if key not in present:
                headers.add(name, value)
        return response
