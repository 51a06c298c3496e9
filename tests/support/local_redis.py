"""The Redis the suite expects on 127.0.0.1:6379: tests that need it are skipped without it,
unless ``REQUIRE_REDIS`` is set (as in CI), which makes them fail."""

from __future__ import annotations

import os
import socket

import pytest

REDIS = ("127.0.0.1", 6379)
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=0.5):
            return True
    except OSError:
        return False


def require_redis() -> None:
    """Skip the calling test (or fixture) when Redis doesn't answer; fail it under CI."""
    if redis_answers():
        return
    message = "no Redis on 127.0.0.1:6379"
    if os.environ.get("REQUIRE_REDIS"):
        pytest.fail(f"{message}, and REQUIRE_REDIS is set")
    pytest.skip(message)
