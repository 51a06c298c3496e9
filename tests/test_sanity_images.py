"""Pieces synced from Sanity show their CDN images (a sensible width, a srcset, the image's
alt or else the piece's name), and the CSP lets exactly Sanity's CDN in, only when Sanity is
configured; a piece with a drawing and no images shows its drawing as before."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from flask import Flask

from devtools.fake_sanity import FakeSanityServer
from tests.html import Page

RING = "product-aurelia-solitaire-ring"
RING_PAGE = "/shop/aurelia-solitaire-ring"
WIDTHS = ("300w", "600w", "900w", "1200w")


@pytest.fixture
def studio() -> Iterator[FakeSanityServer]:
    with FakeSanityServer() as server:
        yield server


@pytest.fixture
def shop(app: Flask, studio: FakeSanityServer) -> Flask:
    from tests.conftest import make_app

    return make_app(app.config["SQLALCHEMY_DATABASE_URI"], **studio.settings())


def sync(shop: Flask) -> None:
    result = shop.test_cli_runner().invoke(args=["catalog", "sync"])
    assert result.exit_code == 0, result.output


def img_src_directive(response) -> str:
    policy = response.headers["Content-Security-Policy"]
    return next(part.strip() for part in policy.split(";") if part.strip().startswith("img-src"))


def test_a_synced_piece_shows_its_cdn_image_with_a_srcset(shop, studio):
    sync(shop)
    image = studio.documents[RING]["images"][0]
    client = shop.test_client()

    response = client.get(RING_PAGE)
    assert response.status_code == 200
    shown = Page(response).one("#product-art img")
    assert shown["src"] == f"{image['url']}?w=600&auto=format"
    assert shown["alt"] == image["alt"]
    candidates = [candidate.strip() for candidate in shown["srcset"].split(",")]
    assert [candidate.split()[1] for candidate in candidates] == list(WIDTHS)
    assert all(candidate.startswith(f"{image['url']}?w=") for candidate in candidates)
    assert shown["sizes"]
    og = Page(response).one('meta[property="og:image"]')
    assert og["content"].startswith("https://cdn.sanity.io/images/")
    assert img_src_directive(response) == "img-src 'self' data: https://cdn.sanity.io"

    listing = Page(client.get("/shop"))
    cards = [img for img in listing.select("img") if img.get("srcset")]
    assert cards
    assert all(urlsplit(img["src"]).netloc == "cdn.sanity.io" for img in cards)

    # An image without alt text is described by the piece's name.
    studio.edit(RING, images=[{"url": image["url"], "alt": ""}], title="Aurelia Solitaire")
    sync(shop)
    shown = Page(client.get(RING_PAGE)).one("#product-art img")
    assert shown["alt"] == "Aurelia Solitaire"
    assert shown["src"] == f"{image['url']}?w=600&auto=format"


@pytest.mark.parametrize("images", ["none", "some"])
def test_a_synced_piece_with_a_drawing_keeps_it(catalogue, shop, studio, images):
    """The built-in catalogue's piece, adopted by slug, keeps its drawing, which follows the
    configuration, whether or not Sanity has photographs of it."""
    if images == "none":
        studio.edit(RING, images=[])
    sync(shop)
    shown = Page(shop.test_client().get(RING_PAGE)).one("#product-art img")
    assert urlsplit(shown["src"]).path.startswith("/art/aurelia-solitaire-ring/")
    assert shown.get("srcset") is None
    assert shown.get("sizes") is None


def test_without_sanity_drawings_as_before_and_no_cdn_in_the_policy(client, catalogue):
    response = client.get(RING_PAGE)
    shown = Page(response).one("#product-art img")
    assert urlsplit(shown["src"]).path.startswith("/art/aurelia-solitaire-ring/")
    assert shown["alt"] == "Aurelia Solitaire Ring in yellow gold with a 0.30 ct diamond"
    assert shown.get("srcset") is None
    assert shown.get("sizes") is None
    assert img_src_directive(response) == "img-src 'self' data:"
    assert "cdn.sanity.io" not in response.headers["Content-Security-Policy"]


def test_a_collection_shows_the_image_the_studio_gave_it(catalogue, shop, studio):
    """A collection with an image in Sanity shows it (hero and home card, with a srcset); one
    without keeps the shop's own art."""
    image = {
        "url": "https://cdn.sanity.io/images/elysium0/production/aurelia-hero-2400x1600.jpg",
        "alt": "Aurelia pieces on white marble",
    }
    studio.edit("collection-aurelia", image=image)
    sync(shop)
    client = shop.test_client()

    hero = Page(client.get("/collections/aurelia")).one("img.collection-hero__art")
    assert hero["src"] == f"{image['url']}?w=600&auto=format"
    assert hero["alt"] == "Aurelia pieces on white marble"
    assert all(width in hero["srcset"] for width in WIDTHS)
    home = Page(client.get("/"))
    card = home.one('.collection-card a[href="/collections/aurelia"] img')
    assert card["src"].startswith(image["url"])
    others = home.select(".collection-card img")
    assert any(urlsplit(img["src"]).path.startswith("/static/") for img in others)

    studio.edit("collection-aurelia", image=None)
    sync(shop)
    hero = Page(client.get("/collections/aurelia")).one("img.collection-hero__art")
    assert urlsplit(hero["src"]).path.startswith("/static/")


def test_a_collection_image_that_is_not_on_sanitys_cdn_skips_the_document(shop, studio):
    studio.edit("collection-aurelia", image={"url": "https://evil.example/x.jpg", "alt": ""})
    result = shop.test_cli_runner().invoke(args=["catalog", "sync"])
    assert "Skipped collection-aurelia: image is not a Sanity CDN image URL" in result.output
