"""Flask extensions, created unbound; ``create_app`` binds each one to the app."""

import time
from typing import Any

from flask import Response, current_app, session
from flask_caching import Cache
from flask_limiter import Limiter
from flask_login import LoginManager as FlaskLoginManager
from flask_login.signals import user_loaded_from_cookie
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFError
from flask_wtf.csrf import CSRFProtect as FlaskWTFCSRFProtect
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from elysium.client_address import client_address
from elysium.db_routing import RoutingSession
from elysium.security import CLOCKS_APART_SECONDS

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class CSRFProtect(FlaskWTFCSRFProtect):
    """Flask-WTF's check, with a Referer that urllib can't parse (an IPv6 host left open, a
    port past 65535) refused as one from another site: over https, Flask-WTF compares it to
    the shop's origin with ``urlparse``, whose ``ValueError`` was a 500."""

    def protect(self, apply_exemptions: bool = False) -> None:
        try:
            super().protect(apply_exemptions)
        except ValueError as error:  # the token's own errors come out as CSRFError
            raise CSRFError("The referrer does not match the host.") from error


# In a session that a remember cookie started: when that cookie ends, and the session with it.
REMEMBERED_UNTIL = "_remembered_until"


class LoginManager(FlaskLoginManager):
    """Flask-Login, with a remember cookie that says when it was given and is refused once it
    is older than ``REMEMBER_COOKIE_DURATION``. Flask-Login's own is the identity and a digest
    alone: its 30 days were only the browser's ``expires``, and a copy taken from a shared
    computer signed in for ever. Ours is the identity signed with the time (its own salt), and
    using it never renews it: only signing in again does. A cookie refused (tampered, too old,
    from before this, or naming a session that has ended) is deleted."""

    SALT = "elysium.remember-me"

    def _set_cookie(self, response: Response) -> None:
        config = current_app.config
        duration = session.pop("_remember_seconds", None)
        lifetime = int(duration or config["REMEMBER_COOKIE_DURATION"].total_seconds())
        response.set_cookie(
            config["REMEMBER_COOKIE_NAME"],
            _remember_serializer().dumps(str(session["_user_id"])),
            max_age=lifetime,
            path=config["REMEMBER_COOKIE_PATH"],
            secure=config["REMEMBER_COOKIE_SECURE"],
            httponly=config["REMEMBER_COOKIE_HTTPONLY"],
            samesite=config["REMEMBER_COOKIE_SAMESITE"],
        )

    def _load_user_from_remember_cookie(self, cookie: str) -> Any:
        remembered = _identity_in_remember_cookie(cookie)
        if remembered is not None:
            # The session it starts lasts no longer than the cookie (``web.sign_in.load_user``).
            session[REMEMBERED_UNTIL] = remembered[1]
        user = None if remembered is None else self._user_callback(remembered[0])
        if user is None:
            session.pop(REMEMBERED_UNTIL, None)
            session["_remember"] = "clear"
            return None
        session["_user_id"] = remembered[0]
        session["_fresh"] = False
        user_loaded_from_cookie.send(current_app._get_current_object(), user=user)
        return user


def _remember_serializer() -> URLSafeTimedSerializer:
    keys = [*(current_app.config["SECRET_KEY_FALLBACKS"] or ()), current_app.secret_key]
    return URLSafeTimedSerializer(keys, salt=LoginManager.SALT)


def _identity_in_remember_cookie(cookie: str) -> tuple[str, int] | None:
    """The identity a remember cookie names, and when the cookie ends (a Unix time), if it is
    ours and no older than its duration (one signed up to a minute ahead, by a server whose
    clock is ahead, still counts)."""
    serializer = _remember_serializer()
    try:
        identity, signed_at = serializer.loads(cookie, return_timestamp=True)
    except BadData:
        return None
    age = int(time.time()) - int(signed_at.timestamp())  # as itsdangerous counts
    max_age = current_app.config["REMEMBER_COOKIE_DURATION"].total_seconds()
    if not -CLOCKS_APART_SECONDS <= age <= max_age or not isinstance(identity, str):
        return None
    return identity, int(signed_at.timestamp() + max_age)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Reads may come from a replica (``DATABASE_REPLICA_URL``): see ``elysium.db_routing``.
db = SQLAlchemy(model_class=Base, session_options={"class_": RoutingSession})
migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()
limiter = Limiter(key_func=client_address)
cache = Cache()  # configured by ``config.cache_settings``
