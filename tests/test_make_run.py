"""``make run``, as a newcomer types it: the shop comes up offline on SQLite with the demo
catalogue synced from the Sanity stand-in, and an edit made in the stand-in reaches the product
page through its signed webhook. The test reuses the virtualenv it runs in (``make -o`` keeps
make from reinstalling it) and keeps the shop's files in a temporary instance folder."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.shop_process import PROJECT_ROOT, free_port

RING = "product-aurelia-solitaire-ring"
RING_PAGE = "/shop/aurelia-solitaire-ring"
STARTUP_SECONDS = 120  # migrations, the seed and a first sync, on a busy CI machine


@dataclass
class LocalShop:
    base_url: str
    studio_url: str
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(check: Callable[[], bool], seconds: float, what: str, shop: LocalShop) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if shop.process.poll() is not None:
            break
        with contextlib.suppress(requests.RequestException):
            if check():
                return
        time.sleep(0.2)
    pytest.fail(f"{what} within {seconds} s; make run printed:\n{shop.output()[-4000:]}")


@pytest.fixture
def local_shop(tmp_path: Path) -> Iterator[LocalShop]:
    venv = Path(sys.prefix)
    if not (venv / "bin" / "flask").exists():
        pytest.skip("make run needs the flask command of a virtualenv")
    port, stripe_port, sanity_port = free_port(), free_port(), free_port()
    log_path = tmp_path / "make-run.log"
    env = {  # .flaskenv is read, as for anyone; nothing of this environment is passed on
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108
        "ELYSIUM_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [  # noqa: S607
                "make",
                "--no-print-directory",
                "-o",
                str(venv / ".installed"),
                "run",
                f"VENV={venv}",
                f"PORT={port}",
                f"STRIPE_PORT={stripe_port}",
                f"SANITY_PORT={sanity_port}",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    shop = LocalShop(
        base_url=f"http://127.0.0.1:{port}",
        studio_url=f"http://127.0.0.1:{sanity_port}",
        log=log_path,
        process=process,
    )
    try:
        wait_for(
            lambda: requests.get(shop.base_url + "/healthz", timeout=2).ok,
            STARTUP_SECONDS,
            "make run did not serve the shop",
            shop,
        )
        yield shop
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def product_heading(html: str) -> str:
    found = re.search(r'<h1 class="product__name"[^>]*>(.*?)</h1>', html, re.S)
    assert found, "the product page has no heading"
    return found.group(1).strip()


@pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")),
    reason="make run serves SQLite whatever the suite's database; the SQLite run covers it",
)
def test_make_run_syncs_from_the_stand_in_and_follows_an_edit_in_the_studio(local_shop):
    assert "Catalogue synced from Sanity: " in local_shop.output()
    assert "products: 0 created, 24 updated" in local_shop.output()
    page = requests.get(local_shop.base_url + RING_PAGE, timeout=10)
    assert page.status_code == 200
    assert product_heading(page.text) == "Aurelia Solitaire Ring"

    edit = requests.post(
        f"{local_shop.studio_url}/_fake/documents/{RING}",
        json={"title": "Aurelia Solitaire, Studio Edit", "basePrice": 512300},
        timeout=20,
    )
    assert edit.status_code == 200
    assert edit.json()["webhook_status"] == 202  # taken; the fetch runs after the answer

    def edit_shown() -> bool:
        html = requests.get(local_shop.base_url + RING_PAGE, timeout=10).text
        return product_heading(html) == "Aurelia Solitaire, Studio Edit" and "From £5,123" in html

    wait_for(edit_shown, 20, "the product page did not show the studio's edit", local_shop)
