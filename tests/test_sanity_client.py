"""The Sanity client (elysium/integrations/sanity.py) against the local stand-in on 127.0.0.1:
paging, drafts, retries, timeouts, the read token, the loopback rule, webhook signatures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from devtools.fake_sanity import FakeSanityServer, sign
from elysium.config import ConfigurationError
from elysium.integrations import sanity
from elysium.integrations.sanity import SanityError
from tests.conftest import make_app

SECRET = "sanity-webhook-test-secret"


@pytest.fixture
def studio() -> Iterator[FakeSanityServer]:
    with FakeSanityServer(webhook_secret=SECRET) as server:
        yield server


def shop_on(app: Flask, studio: FakeSanityServer, **overrides: Any) -> Flask:
    """An app reading the stand-in, with quick timeouts and back-off."""
    settings = {
        **studio.settings(),
        "SANITY_TIMEOUT_SECONDS": 2,
        "SANITY_MAX_RETRIES": 2,
        "SANITY_RETRY_BACKOFF_SECONDS": 0.01,
        **overrides,
    }
    return make_app(app.config["SQLALCHEMY_DATABASE_URI"], **settings)


def products(shop: Flask, page_size: int = 100) -> list[dict[str, Any]]:
    with shop.app_context():
        return list(sanity.iter_documents("product", page_size=page_size))


def test_every_published_product_comes_page_by_page_in_id_order_and_no_draft(
    app: Flask, studio: FakeSanityServer
) -> None:
    studio.add_draft("product-aurelia-solitaire-ring", title="Unfinished rename")
    studio.add_draft("product-secret-new-ring", title="Not ready")
    shop = shop_on(app, studio)

    found = products(shop, page_size=5)

    published = sorted(
        doc_id
        for doc_id, doc in studio.documents.items()
        if doc["_type"] == "product" and not doc_id.startswith("drafts.")
    )
    assert len(published) == 24
    assert [doc["_id"] for doc in found] == published
    assert not any(doc["_id"].startswith("drafts.") for doc in found)
    solitaire = next(d for d in found if d["_id"] == "product-aurelia-solitaire-ring")
    assert solitaire["title"] == "Aurelia Solitaire Ring"  # the published one, not the draft
    assert isinstance(solitaire["basePrice"], int)
    assert solitaire["images"][0]["url"].startswith("https://cdn.sanity.io/images/")

    # One request per page of five (24 = 5+5+5+5+4), each after the last id it saw, and one
    # more: the listing ends on an empty page, as Sanity's guide to paging reads it.
    pages = studio.query_requests()
    assert len(pages) == 6
    assert [r.params["limit"] for r in pages] == [5] * 6
    assert [r.params["type"] for r in pages] == ["product"] * 6
    assert [r.params["lastId"] for r in pages] == [
        "",
        *(published[i] for i in (4, 9, 14, 19, 23)),
    ]
    assert all('!(_id in path("drafts.**"))' in r.query for r in pages)

    with shop.app_context():
        collections = list(sanity.iter_documents("collection", page_size=4))
    assert len(collections) == 4
    assert [c["_id"] for c in collections] == sorted(c["_id"] for c in collections)
    assert len(studio.query_requests()) == 6 + 2


def test_a_page_shorter_than_asked_for_is_not_taken_for_the_last(
    app: Flask, studio: FakeSanityServer
) -> None:
    """Sanity promises no page as long as its slice until the listing's end; its guide to
    paging reads on until a page comes back empty. A short page was taken for the last, and
    the pieces after it for gone: unpublished by the hourly sync (found by review)."""
    studio.app.most_per_page = 7
    shop = shop_on(app, studio)

    found = products(shop, page_size=10)

    assert len(found) == 24
    assert [r.params["limit"] for r in studio.query_requests()] == [10] * 5  # 7, 7, 7, 3, 0


def test_one_document_is_fetched_by_id_and_a_draft_or_missing_one_is_none(
    app: Flask, studio: FakeSanityServer
) -> None:
    studio.edit("product-aurelia-solitaire-ring", title="Aurelia Solitaire")
    studio.add_draft("product-aurelia-solitaire-ring", title="Draft title")
    studio.add_draft("product-only-a-draft", title="Only a draft")
    shop = shop_on(app, studio)
    with shop.app_context():
        doc = sanity.fetch_document("product-aurelia-solitaire-ring")
        assert doc is not None
        assert doc["title"] == "Aurelia Solitaire"
        assert doc["slug"] == "aurelia-solitaire-ring"
        assert sanity.fetch_document("collection-aurelia")["title"] == "Aurelia"  # type: ignore[index]
        assert sanity.fetch_document("product-no-such-piece") is None
        assert sanity.fetch_document("product-only-a-draft") is None
        assert sanity.fetch_document("drafts.product-aurelia-solitaire-ring") is None
        studio.delete("product-aurelia-solitaire-ring")
        assert sanity.fetch_document("product-aurelia-solitaire-ring") is None


def test_a_429_is_tried_again_after_the_retry_after_sanity_asked_for(
    app: Flask, studio: FakeSanityServer
) -> None:
    studio.fail_next(1, status=429, retry_after=1)
    shop = shop_on(app, studio)

    started = time.monotonic()
    found = products(shop)
    elapsed = time.monotonic() - started

    assert len(found) == 24
    assert [r.status for r in studio.query_requests()] == [429, 200, 200]  # the end: empty
    assert 1.0 <= elapsed < 3.0  # the back-off alone is 0.01 s: the wait is Retry-After's


def test_server_errors_are_tried_again_then_given_up_with_a_sanity_error(
    app: Flask, studio: FakeSanityServer
) -> None:
    shop = shop_on(app, studio)
    studio.fail_next(2, status=500)
    assert len(products(shop)) == 24
    assert [r.status for r in studio.query_requests()] == [500, 500, 200, 200]

    studio.requests.clear()
    studio.fail_next(3, status=503)
    with pytest.raises(SanityError, match="3 tries: HTTP 503"):
        products(shop)
    assert [r.status for r in studio.query_requests()] == [503, 503, 503]

    # A query Sanity refuses outright (not a 429/5xx) is not tried again.
    studio.requests.clear()
    wrong = shop_on(app, studio, SANITY_DATASET="staging")
    with pytest.raises(SanityError, match="HTTP 404"):
        products(wrong)
    assert len(studio.query_requests()) == 1


def test_a_hanging_server_times_out_is_tried_again_then_given_up(
    app: Flask, studio: FakeSanityServer
) -> None:
    shop = shop_on(app, studio, SANITY_TIMEOUT_SECONDS=0.3, SANITY_MAX_RETRIES=1)
    studio.hang_next(1, seconds=5)
    started = time.monotonic()
    assert len(products(shop)) == 24
    assert time.monotonic() - started < 2

    studio.requests.clear()
    studio.hang_next(2, seconds=5)
    started = time.monotonic()
    with pytest.raises(SanityError, match=r"no answer within 0\.3 s"), shop.app_context():
        sanity.fetch_document("product-aurelia-solitaire-ring")
    assert time.monotonic() - started < 2
    assert len(studio.query_requests()) == 2
    studio.release_hangs()


def test_an_answer_that_keeps_coming_slowly_is_given_up_at_the_timeout(
    app: Flask, studio: FakeSanityServer
) -> None:
    """``SANITY_TIMEOUT_SECONDS`` is for the whole answer. It was requests' read timeout, which
    is for each read: an answer that kept coming, a little at a time (a proxy or an edge under
    strain), was waited for however long it took (found by review)."""
    shop = shop_on(app, studio, SANITY_TIMEOUT_SECONDS=1, SANITY_MAX_RETRIES=1)
    studio.trickle_next(2, seconds=8)
    started = time.monotonic()
    with pytest.raises(SanityError, match=r"2 tries: no answer within 1 s"):
        products(shop)
    assert time.monotonic() - started < 3.5

    studio.requests.clear()
    studio.trickle_next(1, seconds=8)
    started = time.monotonic()
    assert len(products(shop)) == 24  # the second try is answered at once
    assert time.monotonic() - started < 2.5
    assert len(studio.query_requests()) == 3  # and the empty page that ends the listing


def test_the_webhooks_fetch_gives_up_on_an_answer_that_trickles_within_its_timeout(
    app: Flask, studio: FakeSanityServer
) -> None:
    """The webhook's applier asks Sanity once, within ``SANITY_WEBHOOK_TIMEOUT_SECONDS``, so a
    slow Sanity never holds a web worker away from shoppers: a trickling answer held it until
    gunicorn's own timeout (found by review)."""
    shop = shop_on(app, studio, SANITY_WEBHOOK_TIMEOUT_SECONDS=1)
    studio.trickle_next(1, seconds=8)
    started = time.monotonic()
    with pytest.raises(SanityError, match="no answer within 1 s"), shop.app_context():
        sanity.fetch_document_at_once("product-aurelia-solitaire-ring")
    assert time.monotonic() - started < 2
    assert len(studio.query_requests()) == 1


def test_an_answer_larger_than_the_client_takes_is_refused(studio: FakeSanityServer) -> None:
    """Read against a size cap too: what Sanity sends is never held in memory without end."""
    with sanity.SanityClient(
        project_id=studio.project_id,
        dataset=studio.dataset,
        api_host=studio.base_url,
        max_answer_bytes=20_000,
    ) as client:
        assert client.fetch_document("product-aurelia-solitaire-ring") is not None
        with pytest.raises(SanityError, match="more than 20000 bytes"):
            list(client.iter_documents("product"))
        assert len(list(client.iter_documents("product", page_size=4))) == 24


def test_the_read_token_is_sent_as_a_bearer_token_only_when_set(app: Flask) -> None:
    with FakeSanityServer(token="sk-read-token") as private:
        shop = shop_on(app, private, SANITY_READ_TOKEN="sk-read-token")
        assert len(products(shop, page_size=10)) == 24
        assert {r.authorization for r in private.query_requests()} == {"Bearer sk-read-token"}

        # Without the token the private dataset says 401, which is not tried again.
        private.requests.clear()
        anonymous = shop_on(app, private)
        with pytest.raises(SanityError, match="HTTP 401"):
            products(anonymous)
        assert [r.authorization for r in private.query_requests()] == [None]


@pytest.mark.parametrize(
    "host",
    ["https://api.sanity.example", "http://10.0.0.5:12112", "http://sanity.io.127.0.0.1.nip.io"],
)
def test_the_stand_in_address_is_only_accepted_on_loopback(app: Flask, host: str) -> None:
    with pytest.raises(ConfigurationError, match="SANITY_API_HOST"):
        make_app(
            app.config["SQLALCHEMY_DATABASE_URI"],
            SANITY_PROJECT_ID="abc",
            SANITY_DATASET="production",
            SANITY_API_HOST=host,
        )


@pytest.mark.parametrize("version", ["2025-02-19", "v1", "vX", "v2025-2-19", "latest"])
def test_only_a_dated_api_version_is_accepted(app: Flask, version: str) -> None:
    with pytest.raises(ConfigurationError, match="SANITY_API_VERSION"):
        make_app(
            app.config["SQLALCHEMY_DATABASE_URI"],
            SANITY_PROJECT_ID="abc",
            SANITY_DATASET="production",
            SANITY_API_VERSION=version,
        )


def test_a_sync_given_no_time_at_all_is_refused_at_start_up(app: Flask) -> None:
    with pytest.raises(ConfigurationError, match="SANITY_SYNC_TIMEOUT_SECONDS"):
        make_app(
            app.config["SQLALCHEMY_DATABASE_URI"],
            SANITY_PROJECT_ID="abc",
            SANITY_DATASET="production",
            SANITY_SYNC_TIMEOUT_SECONDS=0,
        )


def test_queries_go_to_the_dated_api_version_and_the_dataset(
    app: Flask, studio: FakeSanityServer
) -> None:
    shop = shop_on(app, studio, SANITY_API_VERSION="v2024-11-01")
    with shop.app_context():
        assert sanity.fetch_document("collection-ondine") is not None
    [asked] = studio.query_requests()
    assert asked.path == f"/v2024-11-01/data/query/{studio.settings()['SANITY_DATASET']}"


def test_settings_say_whether_sanity_is_configured(app: Flask, studio: FakeSanityServer) -> None:
    with app.app_context():
        assert not sanity.configured()
        with pytest.raises(SanityError, match="not configured"):
            sanity.fetch_document("product-x")
    shop = shop_on(app, studio, SANITY_API_HOST=f"http://localhost:{studio.port}")
    with shop.app_context():
        assert sanity.configured()
        assert sanity.fetch_document("collection-ondine") is not None


def test_webhook_signatures_are_checked_like_sanitys_toolkit() -> None:
    body = b'{"_id":"product-aurelia-solitaire-ring","_type":"product","operation":"update"}'
    now = time.time()
    stamp = int(now * 1000)
    good = sign(body, SECRET, stamp)
    assert good.startswith(f"t={stamp},v1=")
    assert "=" not in good.split("v1=", 1)[1]  # base64url without padding
    assert sanity.verify_webhook(good, body, SECRET, now=now)
    assert sanity.webhook_signature(body, SECRET, stamp) == good

    assert not sanity.verify_webhook(good, body + b" ", SECRET, now=now)  # body changed
    assert not sanity.verify_webhook(good, body, "another-secret", now=now)
    assert not sanity.verify_webhook(sign(body, "another-secret", stamp), body, SECRET, now=now)
    assert not sanity.verify_webhook(None, body, SECRET, now=now)
    assert not sanity.verify_webhook("", body, SECRET, now=now)
    assert not sanity.verify_webhook(good, body, "", now=now)
    for malformed in (
        "garbage",
        f"t={stamp}",
        good.split(",")[1],
        f"t=soon,{good.split(',')[1]}",
        f"t={stamp},v1=",
        f"{good},t={stamp}",
    ):
        assert not sanity.verify_webhook(malformed, body, SECRET, now=now), malformed

    # Within the tolerance either way is fine; beyond it, stale or from the future, refused.
    assert sanity.verify_webhook(good, body, SECRET, now=now + 299)
    assert not sanity.verify_webhook(good, body, SECRET, now=now + 301)
    assert not sanity.verify_webhook(good, body, SECRET, now=now - 301)
    assert sanity.verify_webhook(good, body, SECRET, now=now + 50, tolerance_seconds=60)
    assert not sanity.verify_webhook(good, body, SECRET, now=now + 61, tolerance_seconds=60)


def test_the_stand_in_delivers_a_webhook_the_shop_can_verify(studio: FakeSanityServer) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    def receiver(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        received.append((dict(request.headers), request.get_data()))
        return Response("", 202)(environ, start_response)

    server = make_server("127.0.0.1", 0, receiver, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/webhooks/sanity"
    try:
        studio.edit("product-aurelia-solitaire-ring", title="Aurelia Solitaire")
        assert studio.deliver_webhook(url, "product-aurelia-solitaire-ring") == 202
        studio.put({**studio.get("product-aurelia-solitaire-ring"), "_id": "product-new-ring"})  # type: ignore[dict-item]
        assert studio.deliver_webhook(url, "product-new-ring") == 202
        victim = "product-aurelia-signet-ring"
        studio.delete(victim)
        assert studio.deliver_webhook(url, victim, deleted=True) == 202
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    bodies = [json.loads(body) for _, body in received]
    assert bodies == [
        {"_id": "product-aurelia-solitaire-ring", "_type": "product", "operation": "update"},
        {"_id": "product-new-ring", "_type": "product", "operation": "create"},
        {"_id": victim, "_type": "product", "operation": "delete"},
    ]
    for headers, body in received:
        signature = {k.lower(): v for k, v in headers.items()}["sanity-webhook-signature"]
        assert sanity.verify_webhook(signature, body, SECRET)


def test_srcset_asks_sanitys_cdn_for_each_width() -> None:
    url = "https://cdn.sanity.io/images/elysium0/production/abc-1600x1600.jpg"
    assert sanity.srcset(url, [400, 800]) == (
        f"{url}?w=400&auto=format 400w, {url}?w=800&auto=format 800w"
    )
    assert (
        sanity.image_url(f"{url}?rect=0,0,10,10", 600) == f"{url}?rect=0,0,10,10&w=600&auto=format"
    )


def test_the_demo_can_change_a_piece_in_the_stand_in_over_http(
    app: Flask, studio: FakeSanityServer
) -> None:
    import requests

    base = f"{studio.base_url}/_fake/documents"
    answer = requests.post(
        f"{base}/product-aurelia-solitaire-ring",
        json={"title": "Aurelia Solitaire", "basePrice": 199000},
        timeout=5,
    )
    assert answer.status_code == 200
    assert answer.json()["webhook_status"] is None  # no webhook URL given: none sent
    assert requests.delete(f"{base}/product-aurelia-signet-ring", timeout=5).status_code == 200
    assert requests.delete(f"{base}/product-aurelia-signet-ring", timeout=5).status_code == 404

    shop = shop_on(app, studio)
    with shop.app_context():
        doc = sanity.fetch_document("product-aurelia-solitaire-ring")
        assert doc is not None
        assert (doc["title"], doc["basePrice"]) == ("Aurelia Solitaire", 199000)
        assert sanity.fetch_document("product-aurelia-signet-ring") is None
    assert len(products(shop)) == 23
