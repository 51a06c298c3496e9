"""The product art follows the configuration: one drawing per piece, metal and stone, served
like a static file, and shown as configured on the product page, in the bag, on the
wishlist, at checkout, on order pages (shopper and staff) and in emails."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Order, OrderLine, OrderStatus, OutboxEmail
from elysium.services import orders
from elysium.services.seeding import load_demo_catalogue
from tests.conftest import page_text
from tests.html import Page
from tests.support.staff import staff_client
from tests.test_cart import add
from tests.test_wishlist import save_directly

SVG = "{http://www.w3.org/2000/svg}"
METALS = ("yellow-gold", "white-gold", "rose-gold", "platinum")
RING = "aurelia-solitaire-ring"
PLATINUM_RING_ALT = "Aurelia Solitaire Ring in platinum with a 0.50 ct diamond"


def art(client, piece: str, metal: str, stone: str, **headers):
    return client.get(f"/art/{piece}/{metal}/{stone}.svg", headers=headers)


def colours(svg: bytes) -> set[str]:
    return {value.upper() for value in re.findall(r"\"(#[0-9A-Fa-f]{6})\"", svg.decode())}


def stone_scales(svg: bytes) -> list[float]:
    """The scale of every stone group (``grow`` writes ``matrix(k 0 0 k dx dy)``)."""
    return [float(k) for k in re.findall(rb'transform="matrix\(([\d.]+) 0 0 ', svg)]


def picture(page: Page, css: str) -> tuple[str, str]:
    img = page.one(css)
    return urlsplit(img["src"]).path, img["alt"]


def test_every_piece_draws_in_every_metal_and_each_of_its_stones(client):
    for product in load_demo_catalogue()["products"]:
        piece = product["artwork"].removeprefix("products/").removesuffix(".svg")
        stones = [diamond["code"] for diamond in product["diamonds"]] or ["none"]
        for metal in METALS:
            for stone in stones:
                response = art(client, piece, metal, stone)
                assert response.status_code == 200, (piece, metal, stone)
                assert response.mimetype == "image/svg+xml"
                root = ET.fromstring(response.data)
                assert root.tag == f"{SVG}svg"
                assert root.get("viewBox") == "0 0 600 600"
                assert b"<script" not in response.data
                assert b"style" not in response.data


def test_each_metal_has_its_own_colours_and_a_bigger_diamond_is_drawn_bigger(client):
    drawn = {metal: art(client, RING, metal, "0.50ct").data for metal in METALS}
    palettes = {metal: colours(svg) for metal, svg in drawn.items()}
    assert "#8E6B22" in palettes["yellow-gold"]
    for metal in ("white-gold", "rose-gold", "platinum"):
        assert "#8E6B22" not in palettes[metal], metal
    assert len({frozenset(palette) for palette in palettes.values()}) == len(METALS)

    small, large = (
        stone_scales(art(client, RING, "platinum", s).data) for s in ("0.30ct", "1.00ct")
    )
    assert small
    assert all(b > a for a, b in zip(small, large, strict=True))
    # many stones (a tennis bracelet's total weight) each grow too
    light, heavy = (
        stone_scales(art(client, "lumiere-tennis-bracelet", "white-gold", s).data)
        for s in ("2.00ct", "5.00ct")
    )
    assert len(light) == len(heavy) > 20
    assert all(b > a for a, b in zip(light, heavy, strict=True))
    # a piece without stones just follows the metal
    assert stone_scales(art(client, "aurelia-signet-ring", "rose-gold", "none").data) == []


@pytest.mark.parametrize(
    "url",
    [
        "/art/no-such-piece/yellow-gold/none.svg",
        f"/art/{RING}/gold/0.50ct.svg",
        f"/art/{RING}/Platinum/0.50ct.svg",
        f"/art/{RING}/platinum/0.5ct.svg",
        f"/art/{RING}/platinum/0.00ct.svg",
        f"/art/{RING}/platinum/99.00ct.svg",
        f"/art/{RING}/platinum/abc.svg",
        "/art/aurelia-signet-ring/platinum/0.50ct.svg",
        "/art/..%2F..%2Fbase/yellow-gold/none.svg",
        "/art/../../templates/base.html/yellow-gold/none.svg",
        "/art/%2e%2e/yellow-gold/none.svg",
        f"/art/{RING}/platinum/0.50ct.gif",
        f"/art/{RING}/platinum/99.00ct.png",
        "/art/no-such-piece/yellow-gold/none.png",
        "/art/aurelia-signet-ring/platinum/0.50ct.png",
    ],
)
def test_anything_but_a_piece_a_metal_and_a_sane_stone_is_a_404(client, url):
    assert client.get(url).status_code == 404


def test_a_picture_is_cached_like_a_fingerprinted_static_file_without_the_database(
    client, catalogue, queries
):
    page = Page(client.get(f"/shop/{RING}?metal=platinum&diamond=0.50ct"))
    src = page.one(".product__art img")["src"]
    assert "?v=" in src
    with queries() as statements:
        response = client.get(src)
    assert statements == []
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert "Set-Cookie" not in response.headers
    etag = response.headers["ETag"]

    again = client.get(src, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""

    # An old or missing version still gets today's drawing, but not for a year.
    stale = client.get(urlsplit(src).path + "?v=old")
    assert stale.status_code == 200
    assert stale.data == response.data
    assert "immutable" not in stale.headers["Cache-Control"]
    assert "max-age=31536000" not in stale.headers["Cache-Control"]


def png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height (its header's first chunk, IHDR), after checking it is one."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_emails_and_link_previews_get_each_drawing_as_a_png_cached_like_the_svg(
    client, catalogue, queries
):
    """Gmail, Outlook, link previews and search engines show no SVG: what they are given is
    the same drawing rendered, in the metal chosen."""
    page = Page(client.get(f"/shop/{RING}?metal=platinum&diamond=0.50ct"))
    src = page.one('meta[property="og:image"]')["content"]
    assert urlsplit(src).path == f"/art/{RING}/platinum/0.50ct.png"
    with queries() as statements:
        response = client.get(src)
    assert statements == []
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert png_size(response.data) == (480, 480)
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "Set-Cookie" not in response.headers
    again = client.get(src, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""
    stale = client.get(urlsplit(src).path + "?v=old")
    assert stale.data == response.data
    assert "immutable" not in stale.headers["Cache-Control"]

    # Drawn in the metal asked for: platinum and yellow gold are other pictures.
    gold = client.get(f"/art/{RING}/yellow-gold/0.50ct.png")
    assert gold.status_code == 200
    assert png_size(gold.data) == (480, 480)
    assert gold.data != response.data


def test_a_client_asking_for_png_after_png_is_slowed_not_the_shop(client, catalogue):
    for _ in range(120):
        assert client.get(f"/art/{RING}/platinum/0.50ct.png").status_code == 200
    refused = client.get(f"/art/{RING}/platinum/0.60ct.png")
    assert refused.status_code == 429
    assert "Retry-After" in refused.headers or "X-RateLimit-Retry-After" in refused.headers
    # The page and its SVG drawings are not held up.
    assert client.get(f"/art/{RING}/platinum/0.60ct.svg").status_code == 200
    assert client.get(f"/shop/{RING}").status_code == 200


def test_the_product_page_and_its_price_fragment_show_the_chosen_metal_and_diamond(
    client, catalogue
):
    plain = Page(client.get(f"/shop/{RING}"))
    assert picture(plain, ".product__art img") == (
        f"/art/{RING}/yellow-gold/0.30ct.svg",
        "Aurelia Solitaire Ring in yellow gold with a 0.30 ct diamond",
    )
    chosen = Page(client.get(f"/shop/{RING}?metal=platinum&diamond=0.50ct"))
    assert picture(chosen, ".product__art img") == (
        f"/art/{RING}/platinum/0.50ct.svg",
        PLATINUM_RING_ALT,
    )
    assert (
        "/art/aurelia-solitaire-ring/platinum/0.50ct.png?v="
        in (chosen.one('meta[property="og:image"]')["content"])
    )
    fragment = client.htmx("GET", f"/shop/{RING}/price?metal=rose-gold&diamond=1.00ct")
    art_panel = Page(fragment).one("#product-art")
    assert art_panel["hx-swap-oob"] == "true"
    assert picture(Page(fragment), "#product-art img") == (
        f"/art/{RING}/rose-gold/1.00ct.svg",
        "Aurelia Solitaire Ring in rose gold with a 1.00 ct diamond",
    )
    # A choice the piece does not offer shows its first option.
    odd = Page(client.get(f"/shop/{RING}?metal=silver&diamond=9.00ct"))
    assert picture(odd, ".product__art img")[0] == f"/art/{RING}/yellow-gold/0.30ct.svg"


def test_the_bag_and_checkout_show_the_piece_as_configured(client, catalogue):
    add(client, metal="white-gold", diamond="0.50ct")
    shown = (
        f"/art/{RING}/white-gold/0.50ct.svg",
        "Aurelia Solitaire Ring in white gold with a 0.50 ct diamond",
    )
    assert picture(Page(client.get("/cart")), ".bag-line__art img") == shown
    assert picture(Page(client.get("/checkout")), ".checkout__line img") == shown


def test_the_wishlist_shows_each_saved_configuration(app, client, auth, catalogue):
    user_id = auth.create_user()
    save_directly(app, user_id, RING, {"metal": "platinum", "diamond": "0.50ct"})
    save_directly(app, user_id, "aurelia-signet-ring", {"metal": "rose-gold"})
    auth.login()
    page = Page(client.get("/wishlist"))
    shown = [
        (urlsplit(img["src"]).path, img["alt"]) for img in page.select(".wishlist-item__art img")
    ]
    assert sorted(shown) == sorted(
        [
            (f"/art/{RING}/platinum/0.50ct.svg", PLATINUM_RING_ALT),
            (
                "/art/aurelia-signet-ring/rose-gold/none.svg",
                "Aurelia Signet Ring in rose gold",
            ),
        ]
    )


def place_platinum_order(email: str, user_id: int | None) -> str:
    """A paid order with the platinum ring and a line whose piece has no drawing any more."""
    order = Order(
        number=orders.new_order_number(db.session),
        user_id=user_id,
        email=email,
        status=OrderStatus.PENDING,
        currency="GBP",
        subtotal=300000,
        total=300000,
        shipping_address={"full_name": "Ada Lovelace", "line1": "1 Piccadilly"},
        billing_address={"full_name": "Ada Lovelace", "line1": "1 Piccadilly"},
    )
    order.lines.append(
        OrderLine(
            product_name="Aurelia Solitaire Ring",
            product_slug=RING,
            variant_key="platinum/0.50ct",
            configuration={"metal": "platinum", "diamond": "0.50ct", "size": "6"},
            configuration_summary="Platinum with 0.50 ct, US size 6",
            unit_price=280000,
            quantity=1,
        )
    )
    order.lines.append(
        OrderLine(
            product_name="A Retired Brooch",
            product_slug="retired-brooch",
            variant_key="yellow-gold",
            configuration={"metal": "yellow-gold"},
            configuration_summary="18k yellow gold",
            unit_price=20000,
            quantity=1,
        )
    )
    db.session.add(order)
    orders.transition_to(order, OrderStatus.PAID, actor="stripe")
    orders.email_shopper(db.session, order, "order_confirmation", f"Order {order.number}")
    db.session.commit()
    return order.number


def test_order_pages_and_emails_draw_the_line_from_its_snapshot(app, client, auth):
    user_id = auth.create_user("ada@example.com")
    with app.test_request_context():
        number = place_platinum_order("ada@example.com", user_id)
    auth.login()

    shopper = Page(client.get(f"/account/orders/{number}"))
    shown = [(urlsplit(i["src"]).path, i["alt"]) for i in shopper.select(".order-line img")]
    assert shown == [(f"/art/{RING}/platinum/0.50ct.svg", PLATINUM_RING_ALT)]
    assert "A Retired Brooch" in page_text(client.get(f"/account/orders/{number}"))

    staff = Page(staff_client(app).get(f"/staff/orders/{number}"))
    shown = [(urlsplit(i["src"]).path, i["alt"]) for i in staff.select(".staff-line img")]
    assert shown == [(f"/art/{RING}/platinum/0.50ct.svg", PLATINUM_RING_ALT)]

    with app.app_context():
        email = db.session.scalars(
            select(OutboxEmail).where(OutboxEmail.template == "order_confirmation")
        ).one()
        html = email.body_html
    [img] = Page(html).select("img[alt]")
    assert client.get(img["src"]).mimetype == "image/png"
    assert img["src"].startswith(
        f"{app.config['SITE_URL'].rstrip('/')}/art/{RING}/platinum/0.50ct.png?v="
    )
    assert img["alt"] == PLATINUM_RING_ALT
