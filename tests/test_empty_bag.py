"""Emptying the bag in one action: asked first on the bag page, a CSRF-protected POST, refused
while the bag is being paid for."""

from __future__ import annotations

from tests.conftest import page_text
from tests.html import Page, bag_count, text_of
from tests.test_cart import RING, RING_CHOICES, add, freeze_bags, lines


def fill_bag(client) -> None:
    add(client, quantity=2)
    add(client, "aurelia-fine-chain", metal="yellow-gold")
    assert bag_count(client.get("/cart")) == 3


def test_the_bag_page_asks_before_emptying(client, catalogue):
    fill_bag(client)
    page = Page(client.get("/cart"))
    disclosure = page.one("details.bag-empty")
    assert "open" not in disclosure.attrs  # the emptying button is behind a second step
    assert text_of(disclosure, "summary") == "Empty bag"
    form = page.one("details.bag-empty form")
    assert (form["method"], form["action"]) == ("post", "/cart/empty")
    assert form["hx-post"] == "/cart/empty"
    assert "hx-confirm" not in form.attrs  # the disclosure asks, with or without JavaScript
    assert form.select_one("input[name=csrf_token]")["value"]
    assert text_of(form, "#empty-bag-question") == "Remove all 3 pieces from your bag?"
    assert text_of(form, "button") == "Yes, empty my bag"


def test_emptying_without_javascript_removes_every_line_and_redirects(app, client, catalogue):
    fill_bag(client)
    response = client.submit("/cart", {}, action="/cart/empty")
    assert response.status_code == 303
    assert response.headers["Location"] == "/cart"
    assert lines(app) == []
    bag = client.get("/cart")
    assert "Emptied your bag: removed 3 pieces." in page_text(bag)
    assert "Your bag is empty." in page_text(bag)
    assert bag_count(bag) == 0
    assert Page(bag).select("details.bag-empty") == []


def test_emptying_with_htmx_swaps_the_bag_and_updates_the_count(app, client, catalogue):
    fill_bag(client)
    fragment = client.htmx("POST", "/cart/empty")
    assert fragment.status_code == 200
    page = Page(fragment)
    assert "Your bag is empty." in text_of(page, "#bag")
    count = page.one("#bag-count")
    assert count["hx-swap-oob"] == "true"
    assert bag_count(page) == 0
    assert "Emptied your bag: removed 3 pieces." in text_of(page, "#messages")
    assert fragment.headers["Cache-Control"] == "no-store"
    assert lines(app) == []


def test_a_bag_being_paid_for_cannot_be_emptied_409(app, client, catalogue):
    add(client)
    freeze_bags(app)
    page = Page(client.get("/cart"))
    assert page.select("details.bag-empty") == []  # not offered while paying
    response = client.submit("/cart", {}, action="/cart/empty")
    assert response.status_code == 409
    assert "Your bag is being paid for" in page_text(response)
    assert "Resume or cancel the payment first." in page_text(response)
    fragment = client.htmx("POST", "/cart/empty")
    assert fragment.status_code == 409
    assert "Your bag is being paid for" in page_text(fragment)
    assert lines(app) == [(RING, RING_CHOICES, 1)]


def test_emptying_needs_the_csrf_token_and_a_get_changes_nothing(app, client, catalogue):
    fill_bag(client)
    assert client.post("/cart/empty").status_code == 400
    assert client.post("/cart/empty", data={"csrf_token": "forged"}).status_code == 400
    assert client.htmx("POST", "/cart/empty", headers={"X-CSRFToken": "forged"}).status_code == 400
    assert client.get("/cart/empty").status_code == 405
    assert len(lines(app)) == 2


def test_emptying_only_ever_touches_the_shoppers_own_bag(app, client, catalogue):
    fill_bag(client)
    stranger = app.test_client()
    response = stranger.submit("/", {}, action="/cart/empty")  # no bag at all
    assert response.status_code == 303
    assert "Your bag is already empty." in page_text(stranger.get("/cart"))
    assert len(lines(app)) == 2
