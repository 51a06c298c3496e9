"""Flask extensions, created unbound; ``create_app`` binds each one to the app."""

from flask_caching import Cache
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFError
from flask_wtf.csrf import CSRFProtect as FlaskWTFCSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from elysium.db_routing import RoutingSession

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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Reads may come from a replica (``DATABASE_REPLICA_URL``): see ``elysium.db_routing``.
db = SQLAlchemy(model_class=Base, session_options={"class_": RoutingSession})
migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()
limiter = Limiter(key_func=get_remote_address)
cache = Cache()  # configured by ``config.cache_settings``
