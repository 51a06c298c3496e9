"""gunicorn.conf.py: the settings `gunicorn wsgi:app` runs with, and a graceful stop.

A SIGTERM while a shopper's request is being answered lets that request finish: here the
request is "Sign in with Google", held while the stand-in provider withholds its discovery
document, which is an outside call the shop really makes and the test can hold and release.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.html import csrf_token
from tests.support.oidc_provider import OIDCProvider
from tests.support.shop_process import PROJECT_ROOT, free_port

SHOP_SETTINGS = {
    "ELYSIUM_ENV": "testing",
    "SECRET_KEY": "test-secret-key-not-for-production",
    "EMAIL_BACKEND": "console",
}


def gunicorn_env(**settings: str) -> dict[str, str]:
    """What a server's environment holds: PATH, HOME and the given settings, nothing else."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108
        "PYTHONPATH": str(PROJECT_ROOT),
        "FLASK_SKIP_DOTENV": "1",
        "ELYSIUM_INSTANCE_PATH": os.environ["ELYSIUM_INSTANCE_PATH"],
        **SHOP_SETTINGS,
        **settings,
    }


def printed_config(*flags: str, **settings: str) -> dict[str, str]:
    """The settings gunicorn reports it would run with (``--print-config``)."""
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "gunicorn", "--print-config", *flags, "wsgi:app"],
        cwd=PROJECT_ROOT,
        env=gunicorn_env(**settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pairs = (line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs}


def test_by_default_two_workers_per_cpu_and_one_more_and_no_access_log_of_gunicorns():
    config = printed_config()
    cpus = len(os.sched_getaffinity(0))
    assert config["workers"] == str(2 * cpus + 1)
    assert config["threads"] == "1"
    assert config["accesslog"] == "None"
    assert config["forwarded_allow_ips"] == "['127.0.0.1', '::1']"
    assert int(config["timeout"]) >= 40
    assert 30 <= int(config["graceful_timeout"]) < int(config["timeout"])


def test_the_environment_sets_workers_threads_and_trusted_proxies():
    config = printed_config(
        WEB_CONCURRENCY="3", GUNICORN_THREADS="4", FORWARDED_ALLOW_IPS="10.0.0.7"
    )
    assert (config["workers"], config["threads"]) == ("3", "4")
    assert config["forwarded_allow_ips"] == "['10.0.0.7']"


def test_the_command_line_wins_over_the_file():
    assert printed_config("--workers", "2", WEB_CONCURRENCY="3")["workers"] == "2"


@pytest.fixture
def oidc():
    with OIDCProvider("elysium-google-client", "elysium-google-secret") as provider:
        yield provider


DISCOVERY = ("GET", "/.well-known/openid-configuration")


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_sigterm_lets_the_request_in_flight_finish_then_the_server_exits(app, oidc, tmp_path: Path):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"
    env = gunicorn_env(
        DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
        SITE_URL=base_url,
        GOOGLE_CLIENT_ID=oidc.client_id,
        GOOGLE_CLIENT_SECRET=oidc.client_secret,
        GOOGLE_ISSUER=oidc.issuer,
        GOOGLE_TIMEOUT_SECONDS="30",
        WEB_CONCURRENCY="1",
        LOG_FORMAT="json",
    )
    with log.open("w") as stderr:
        server = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "wsgi:app"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        browser = requests.Session()
        wait_for(lambda: up(base_url), "the shop to start")
        token = csrf_token(browser.get(f"{base_url}/auth/login", timeout=30).text)
        oidc.hanging = {"discovery"}
        answers: list[requests.Response] = []
        pressing = threading.Thread(
            target=lambda: answers.append(
                browser.post(
                    f"{base_url}/auth/google",
                    data={"csrf_token": token},
                    headers={"X-Request-ID": "INFLIGHT1"},
                    allow_redirects=False,
                    timeout=60,
                )
            )
        )
        pressing.start()
        wait_for(lambda: DISCOVERY in oidc.requests, "the shop to ask the provider")

        server.send_signal(signal.SIGTERM)
        wait_for(lambda: "Handling signal: term" in log.read_text(), "gunicorn to take SIGTERM")
        time.sleep(0.5)  # the master signals its worker right after logging the signal
        assert server.poll() is None  # still answering the shopper
        oidc.reset()  # the provider answers at last
        pressing.join(timeout=30)

        (answer,) = answers
        assert answer.status_code == 302
        assert answer.headers["Location"].startswith(f"{oidc.base_url}/authorize?")
        assert answer.headers["X-Request-ID"] == "INFLIGHT1"
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "elysium.access"]
    assert {
        (line["method"], line["path"], line["status"], line["request_id"]) for line in access
    } >= {("POST", "/auth/google", 302, "INFLIGHT1")}
    messages = [line["message"] for line in lines if line["logger"] == "gunicorn.error"]
    assert "Handling signal: term" in messages
    assert any(message.startswith("Shutting down") for message in messages)


def up(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/healthz", timeout=1).ok
    except (requests.ConnectionError, requests.Timeout):
        return False


@pytest.mark.parametrize(("config", "frozen"), [("gunicorn.conf.py", True), ("/dev/null", False)])
def test_a_worker_freezes_what_it_loaded_so_a_full_collection_stays_short(config, frozen):
    """After a worker loads its app, gunicorn.conf.py freezes what it holds (gc.freeze): a
    probe app answers how many objects its worker's collector has frozen."""
    port = free_port()
    server = subprocess.Popen(  # noqa: S603
        [
            *(sys.executable, "-m", "gunicorn", "--config", config),
            *("--bind", f"127.0.0.1:{port}", "--workers", "1"),
            "tests.support.freeze_probe:app",
        ],
        cwd=PROJECT_ROOT,
        env=gunicorn_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        answers: list[int] = []

        def answered() -> bool:
            try:
                answers.append(int(requests.get(f"http://127.0.0.1:{port}/", timeout=5).text))
            except requests.ConnectionError:
                return False
            return True

        wait_for(answered, "the probe to start")
        assert (answers[0] > 1000) is frozen, answers
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
