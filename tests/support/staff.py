"""A member of staff, signed in through the real forms with a second factor.

client = staff_client(app)                       # signed in, second factor passed
user_id, key = create_staff(app, enrolled=False) # a key being enrolled, not yet confirmed
sign_in_staff(client, key)                       # password, then a code from the key
"""

from __future__ import annotations

from datetime import timedelta

import pyotp
from flask import Flask

from elysium.extensions import db
from elysium.models import Role, User
from elysium.models.types import utcnow
from elysium.services import accounts
from tests.conftest import PASSWORD, ShopClient, create_user

STAFF_EMAIL = "keeper@elysium.example"


def create_staff(app: Flask, email: str = STAFF_EMAIL, *, enrolled: bool = True) -> tuple[int, str]:
    """A staff user with the password ``PASSWORD`` and a TOTP key: their own authenticator's
    when ``enrolled``, else the key they will be shown to enrol. Returns its id and key."""
    secret = pyotp.random_base32()
    with app.app_context():
        user_id = create_user(email, first_name="Kit", last_name="Keeper")
        user = db.session.get(User, user_id)
        user.role = Role.STAFF
        user.totp_secret = secret
        if enrolled:
            user.totp_enrolled_at = utcnow()
        db.session.commit()
        db.session.remove()
    return user_id, secret


def unused_code(app: Flask, secret: str, email: str = STAFF_EMAIL) -> str:
    """A code the authenticator shows now, or within the next 30 s: one from a step the account
    has not used yet (a code is accepted once, so signing in twice needs the next code)."""
    totp = pyotp.TOTP(secret)
    with app.app_context():
        user = accounts.user_by_email(db.session, email)
        last = user.totp_last_step if user is not None else None
        db.session.remove()
    now = utcnow()
    for offset in (0, 1):
        moment = now + timedelta(seconds=offset * totp.interval)
        if last is None or totp.timecode(moment) > last:
            return totp.at(moment)
    raise AssertionError("both usable codes are used: a third sign-in must wait 30 seconds")


def sign_in_staff(client: ShopClient, secret: str, email: str = STAFF_EMAIL) -> None:
    """Sign in with the password, then pass the second step with the authenticator's code."""
    signed_in = client.submit("/auth/login", {"email": email, "password": PASSWORD})
    assert signed_in.status_code == 303, signed_in.status_code
    code = unused_code(client.application, secret, email)
    passed = client.submit("/staff/security/second-factor", {"code": code})
    assert passed.status_code in {200, 303}, passed.get_data(as_text=True)


def staff_client(app: Flask, email: str = STAFF_EMAIL) -> ShopClient:
    """A browser of a staff member who has passed the second factor."""
    _, secret = create_staff(app, email)
    client = app.test_client()
    sign_in_staff(client, secret, email)
    return client  # type: ignore[return-value]
