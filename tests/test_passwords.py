"""Password hashing: the cost is a setting (production strength unless turned down, as the
tests do), an unknown email costs what a known one does, and older hashes are remade."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, extract_parameters
from argon2.profiles import RFC_9106_LOW_MEMORY
from sqlalchemy import select

from elysium import create_app
from elysium.config import ConfigurationError
from elysium.extensions import db
from elysium.models import User
from elysium.services import passwords
from tests.conftest import PASSWORD, AuthActions, make_app

# Neither the tests' cheap cost nor the library's default, so a hash made at either shows.
OTHER_COST = {
    "PASSWORD_HASH_TIME_COST": 2,
    "PASSWORD_HASH_MEMORY_KIB": 32,
    "PASSWORD_HASH_PARALLELISM": 2,
}


def cost(password_hash: str) -> tuple[int, int, int]:
    """(passes, memory in KiB, lanes), read from the hash itself."""
    parameters = extract_parameters(password_hash)
    return parameters.time_cost, parameters.memory_cost, parameters.parallelism


def configured_cost(app) -> tuple[int, int, int]:
    return (
        app.config["PASSWORD_HASH_TIME_COST"],
        app.config["PASSWORD_HASH_MEMORY_KIB"],
        app.config["PASSWORD_HASH_PARALLELISM"],
    )


def app_from_environment(monkeypatch, tmp_path, **environment: str):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ELYSIUM_INSTANCE_PATH", str(tmp_path))
    return create_app(
        {"ELYSIUM_ENV": "testing", "SECRET_KEY": "x" * 32, "SQLALCHEMY_DATABASE_URI": "sqlite://"}
    )


def stored_hash(app, email: str = "ada@example.com") -> str:
    with app.app_context():
        return db.session.scalar(select(User.password_hash).where(User.email == email))


def test_hashes_are_made_at_the_cost_the_settings_give(monkeypatch, tmp_path):
    app = app_from_environment(
        monkeypatch,
        tmp_path,
        PASSWORD_HASH_TIME_COST="2",
        PASSWORD_HASH_MEMORY_KIB="32",
        PASSWORD_HASH_PARALLELISM="2",
    )
    with app.app_context():
        password_hash = passwords.hash_password(PASSWORD)
        assert cost(password_hash) == (2, 32, 2)
        assert passwords.verify_password(password_hash, PASSWORD)
        assert not passwords.verify_password(password_hash, "not the password")


def test_the_default_cost_is_rfc_9106_low_memory_or_stronger(monkeypatch, tmp_path):
    app = app_from_environment(monkeypatch, tmp_path)
    with app.app_context():
        passes, memory_kib, lanes = cost(passwords.hash_password(PASSWORD))
    assert passes >= RFC_9106_LOW_MEMORY.time_cost
    assert memory_kib >= RFC_9106_LOW_MEMORY.memory_cost
    assert lanes >= RFC_9106_LOW_MEMORY.parallelism


def test_the_tests_hash_cheaply(app, app_context):
    assert cost(passwords.hash_password(PASSWORD)) == (1, 8, 1)


@pytest.mark.parametrize(
    "environment",
    [
        {"PASSWORD_HASH_TIME_COST": "0"},
        {"PASSWORD_HASH_PARALLELISM": "0"},
        {"PASSWORD_HASH_MEMORY_KIB": "4", "PASSWORD_HASH_PARALLELISM": "1"},
        {"PASSWORD_HASH_MEMORY_KIB": "16", "PASSWORD_HASH_PARALLELISM": "4"},
        {"PASSWORD_HASH_MEMORY_KIB": "64MB"},
    ],
)
def test_a_cost_argon2_cannot_use_stops_the_app_at_start(monkeypatch, tmp_path, environment):
    with pytest.raises(ConfigurationError, match="PASSWORD_HASH_"):
        app_from_environment(monkeypatch, tmp_path, **environment)


@pytest.fixture
def verified_hashes(monkeypatch) -> list[str]:
    """Every hash argon2 verifies a password against (argon2 still does the work)."""
    hashes: list[str] = []
    verify = PasswordHasher.verify

    def recording_verify(self, password_hash, password):
        hashes.append(password_hash)
        return verify(self, password_hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", recording_verify)
    return hashes


def test_an_unknown_email_costs_one_verification_at_the_configured_cost_like_a_known_one(
    app, verified_hashes
):
    shop = make_app(app.config["SQLALCHEMY_DATABASE_URI"], **OTHER_COST)
    auth = AuthActions(shop, shop.test_client())
    auth.create_user("ada@example.com")

    assert auth.login("nobody@example.com").status_code == 422
    assert auth.login("ada@example.com", "not the password").status_code == 422

    assert [cost(password_hash) for password_hash in verified_hashes] == [(2, 32, 2), (2, 32, 2)]
    unknown, known = verified_hashes
    assert known == stored_hash(app)
    assert unknown != known


def test_a_hash_made_at_another_cost_signs_in_and_is_remade_at_the_configured_cost(app, auth):
    auth.create_user()
    older = PasswordHasher(
        time_cost=OTHER_COST["PASSWORD_HASH_TIME_COST"],
        memory_cost=OTHER_COST["PASSWORD_HASH_MEMORY_KIB"],
        parallelism=OTHER_COST["PASSWORD_HASH_PARALLELISM"],
    ).hash(PASSWORD)
    with app.app_context():
        db.session.scalar(select(User)).password_hash = older
        db.session.commit()

    assert auth.login(password="not the password").status_code == 422
    assert stored_hash(app) == older

    assert auth.login().status_code == 303
    remade = stored_hash(app)
    assert cost(remade) == configured_cost(app)
    with app.app_context():
        assert passwords.verify_password(remade, PASSWORD)
