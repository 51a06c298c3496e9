"""Sold-out choices say so before the click: on the choice itself, on "Add to bag" (disabled,
with the reason next to it) and in what the page offers instead; the price fragment carries
the same state; and it all costs the same few queries however many choices a piece has."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from elysium.extensions import db
from elysium.services.seeding import seed_catalogue
from elysium.web.fragments import forget_kept
from tests.html import Page, elements, form_fields, text_of

RING = "/shop/aurelia-solitaire-ring"


def marks(page, kind: str) -> dict[str, str]:
    """{option code: what its choice says about stock ("" when it can be had now)}."""
    return {
        str(radio["value"]): text_of(radio.parent.select_one(".choice__status"))
        for radio in elements(page, f'input[type="radio"][name="{kind}"]')
    }


def add_button(page):
    return Page(str(page.one("#add-to-bag"))).one("button.add-to-bag__button")


def offers(page) -> list[dict[str, list[str]]]:
    return [
        parse_qs(urlsplit(str(link["href"])).query)
        for link in elements(page, "#add-to-bag .add-to-bag__offers a")
    ]


def test_a_metal_with_no_diamond_in_stock_is_marked_sold_out_and_cannot_be_added(client, catalogue):
    page = Page(client.get(RING, query_string={"metal": "platinum", "size": "6"}))

    assert marks(page, "metal") == {
        "yellow-gold": "",
        "white-gold": "",
        "rose-gold": "",
        "platinum": "sold out",
    }
    # every diamond is sold out in the chosen metal
    assert set(marks(page, "diamond").values()) == {"sold out"}
    button = add_button(page)
    assert button.has_attr("disabled")
    reason = page.one(f"#{button['aria-describedby']}")
    assert "Sold out in platinum" in text_of(reason)
    assert "can't be added to your bag" in text_of(reason)
    # what can be had instead: the same diamond in the other metals, keeping the ring size
    found = offers(page)
    assert [(o["metal"], o["diamond"]) for o in found][:3] == [
        (["yellow-gold"], ["0.30ct"]),
        (["white-gold"], ["0.30ct"]),
        (["rose-gold"], ["0.30ct"]),
    ]
    assert all(o["size"] == ["6"] for o in found)
    assert "In stock" in text_of(page, "#add-to-bag .add-to-bag__offers")


def test_a_diamond_sold_out_in_the_chosen_metal_offers_the_other_diamonds_and_metals(
    client, catalogue
):
    page = Page(client.get(RING, query_string={"metal": "white-gold", "diamond": "1.00ct"}))

    assert marks(page, "metal")["white-gold"] == ""  # other diamonds in white gold are in stock
    assert marks(page, "diamond") == {"0.30ct": "", "0.50ct": "", "1.00ct": "sold out"}
    assert add_button(page).has_attr("disabled")
    pairs = [(o["metal"][0], o["diamond"][0]) for o in offers(page)]
    assert ("yellow-gold", "1.00ct") in pairs
    assert ("white-gold", "0.30ct") in pairs
    assert "Only 1 left" in text_of(page, "#add-to-bag .add-to-bag__offers")


def test_an_available_choice_has_no_mark_and_an_enabled_add_to_bag(client, catalogue):
    page = Page(client.get(RING, query_string={"metal": "yellow-gold", "diamond": "1.00ct"}))

    assert set(marks(page, "metal").values()) == {"", "sold out"}
    assert marks(page, "diamond") == {"0.30ct": "", "0.50ct": "", "1.00ct": ""}
    button = add_button(page)
    assert not button.has_attr("disabled")
    assert not button.has_attr("aria-describedby")
    assert not page.select("#add-to-bag .add-to-bag__offers")


def test_a_made_to_order_piece_is_never_shown_sold_out(client, catalogue):
    # No stock at all, but the signet is made to order in three weeks.
    page = Page(client.get("/shop/aurelia-signet-ring"))

    assert set(marks(page, "metal").values()) == {"made to order"}
    assert not add_button(page).has_attr("disabled")
    assert "sold out" not in text_of(page, "form.configurator").lower()
    assert "Made to order — ships in about 3 weeks" in text_of(page, "#price-panel")


def test_the_price_fragment_carries_the_same_marks_and_add_to_bag_state(client, catalogue):
    sold_out = Page(client.htmx("GET", f"{RING}/price", query_string={"metal": "platinum"}))

    for code, mark in {"platinum": "sold out", "yellow-gold": ""}.items():
        status = sold_out.one(f"#choice-status-metal-{code}")
        assert status["hx-swap-oob"] == "true"
        assert text_of(status) == mark
    assert text_of(sold_out.one("#choice-status-diamond-0\\.30ct")) == "sold out"
    block = sold_out.one("#add-to-bag")
    assert block["hx-swap-oob"] == "true"
    assert add_button(sold_out).has_attr("disabled")
    assert "Sold out in platinum" in text_of(sold_out, "#add-to-bag-reason")
    assert offers(sold_out)

    # the page sends back what its "Add to bag" shows, as the form would
    shown = form_fields(sold_out.one("#add-to-bag"))["add_to_bag_state"]
    back = Page(
        client.htmx(
            "GET",
            f"{RING}/price",
            query_string={"metal": "yellow-gold", "quantity": "2", "add_to_bag_state": shown},
        )
    )
    assert text_of(back.one("#choice-status-metal-platinum")) == "sold out"
    assert text_of(back.one("#choice-status-diamond-0\\.30ct")) == ""
    assert not add_button(back).has_attr("disabled")
    assert not back.select("#add-to-bag-reason")
    # the quantity chosen is kept when the block is swapped
    assert form_fields(back.one("#add-to-bag"))["quantity"] == "2"


def test_the_marks_and_offers_cost_no_query_per_choice(app, client, catalogue, queries):
    def count(url: str, **headers) -> int:
        with app.app_context():
            forget_kept()  # what a page costs before its catalogue is kept
        browser = app.test_client()  # a first visit each: no "Recently viewed" to read
        with queries() as statements:
            assert browser.get(url, headers=headers).status_code == 200
        return len(statements)

    plain = count("/shop/meridian-facet-studs")  # two metals, no diamonds
    many = count(f"{RING}?metal=platinum")  # four metals by three diamonds, all sold out
    fragment = count(f"{RING}/price?metal=platinum", **{"HX-Request": "true"})
    assert many == plain
    assert fragment <= many

    bigger = {**catalogue}
    bigger["products"] = [
        {
            **product,
            "diamonds": product["diamonds"]
            + [{"code": f"{n}.00ct-x", "label": f"{n} ct", "delta": n} for n in range(2, 8)],
        }
        if product["slug"] == "aurelia-solitaire-ring"
        else product
        for product in catalogue["products"]
    ]
    with app.app_context():
        seed_catalogue(db.session, bigger)
        db.session.commit()
    assert len(marks(Page(client.get(f"{RING}?metal=platinum")), "diamond")) == 9
    assert count(f"{RING}?metal=platinum") == many


def test_a_price_refresh_leaves_add_to_bag_alone_while_what_it_shows_is_unchanged(
    client, catalogue
):
    # Replacing the button would drop an add to bag queued behind the refresh.
    page = Page(client.get(RING))
    shown = form_fields(page.one("#add-to-bag"))["add_to_bag_state"]
    refresh = Page(
        client.htmx(
            "GET",
            f"{RING}/price",
            query_string={"metal": "white-gold", "engraving": "Ever", "add_to_bag_state": shown},
        )
    )
    assert not refresh.select("#add-to-bag")
    assert text_of(refresh.one("#choice-status-metal-platinum")) == "sold out"
