"""The shop under gunicorn in its own process group, so a test can kill it mid-request."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ShopProcess:
    """``gunicorn wsgi:app`` on 127.0.0.1 with the given settings (nothing else of the
    environment that names a setting is passed on)."""

    def __init__(self, settings: dict[str, str], *, workers: int = 1) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.settings = {"SITE_URL": self.base_url, **settings}
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        # What the shop wrote (its log lines, with any traceback), for a test that failed.
        self.log_path = Path(tempfile.mkstemp(prefix="elysium-shop-", suffix=".log")[1])

    def logged_about(self, reference: str, lines: int = 60) -> str:
        """The shop's log from the first line naming the request ``reference`` on."""
        logged = self.log_path.read_text(errors="replace").splitlines()
        start = next((n for n, line in enumerate(logged) if f"[{reference}]" in line), None)
        return "" if start is None else "\n".join(logged[start : start + lines])

    def start(self) -> ShopProcess:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108
            "PYTHONPATH": str(PROJECT_ROOT),
            "FLASK_SKIP_DOTENV": "1",  # wsgi.py would read a developer's .env
            **self.settings,
        }
        self.process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                str(self.workers),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--timeout",
                "120",
                "wsgi:app",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=(log := os.open(self.log_path, os.O_WRONLY | os.O_APPEND)),
            stderr=log,
            start_new_session=True,
        )
        os.close(log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=1).ok:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # not up, or still loading
                time.sleep(0.1)
        self.kill()
        raise RuntimeError("the shop did not start under gunicorn")

    def kill(self) -> None:
        """SIGKILL to the master and its workers at once: nothing gets to clean up."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> ShopProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
