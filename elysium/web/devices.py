"""Known devices: browsers that have signed in to an account before.

Every successful sign-in (password, Google, a confirmed email, a password reset) gives the
browser a long-lived device cookie naming the account: its user id and a random device id,
signed with the secret key under a salt of its own, HttpOnly, SameSite=Lax, Secure when the
session cookie is. It proves nothing by itself and signs nobody in; it only tells the sign-in
throttle (:mod:`elysium.web.throttle`) that the owner's own browser is asking, so strangers
trying passwords elsewhere never slow it down. Signing out leaves it in place: the browser has
still signed in to that account before.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask import Response, current_app, g, request
from itsdangerous import BadData, URLSafeTimedSerializer

from elysium.config import cookie_name
from elysium.extensions import db
from elysium.models.users import User
from elysium.services import accounts

COOKIE = "elysium_device"
SALT = "elysium.sign-in.known-device"
DAYS = 400  # the longest a browser keeps a cookie; each sign-in starts the count again
MAX_DEVICE_ID_LENGTH = 64


@dataclass(frozen=True)
class Device:
    user_id: int
    device_id: str


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def _cookie_name() -> str:
    return cookie_name(COOKIE, secure=current_app.config["SESSION_COOKIE_SECURE"])


def this_device() -> Device | None:
    """The device this browser's cookie names; a missing, tampered or expired one is none."""
    raw = request.cookies.get(_cookie_name())
    if not raw:
        return None
    try:
        payload = _serializer().loads(raw, max_age=DAYS * 24 * 3600)
    except BadData:
        return None
    if not isinstance(payload, dict):
        return None
    user_id, device_id = payload.get("user"), payload.get("device")
    if not isinstance(user_id, int) or not isinstance(device_id, str):
        return None
    if not 0 < len(device_id) <= MAX_DEVICE_ID_LENGTH:
        return None
    return Device(user_id, device_id)


def known_device_for(email: str) -> Device | None:
    """This browser's device, if it has signed in before to the account with this email."""
    device = this_device()
    if device is None:
        return None
    user = db.session.get(User, device.user_id)
    if user is None or accounts.normalise_email(user.email) != accounts.normalise_email(email):
        return None
    return device


def remember_device(user: User) -> None:
    """On a successful sign-in: (re)send the device cookie for this account after the request.

    A browser that already is a known device of the account keeps its device id.
    """
    device = this_device()
    if device is None or device.user_id != user.id:
        device = Device(user.id, secrets.token_urlsafe(16))
    g.device_cookie = device


def write_device_cookie(response: Response) -> Response:
    """After every request: set the device cookie when the request signed someone in."""
    device: Device | None = g.get("device_cookie")
    if device is not None:
        response.set_cookie(
            _cookie_name(),
            _serializer().dumps({"user": device.user_id, "device": device.device_id}),
            max_age=DAYS * 24 * 3600,
            path="/",
            secure=current_app.config["SESSION_COOKIE_SECURE"],
            httponly=True,
            samesite="Lax",
        )
    return response
