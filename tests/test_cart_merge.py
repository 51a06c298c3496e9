"""Signing in brings the guest bag into the account's; signing out leaves it there."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Cart, Order
from elysium.models.types import utcnow
from tests.conftest import PASSWORD, AuthActions, page_text
from tests.support.checkout import add_chain, check_out
from tests.support.meanwhile import in_another_window, meanwhile
from tests.test_cart import (
    COOKIE,
    RING,
    RING_CHOICES,
    add,
    carts,
    header_count,
    line_ids,
    lines,
    same_browser,
    set_stock,
)

CHAIN = "aurelia-fine-chain"


def bag_cookie_header(response) -> str | None:
    return next(
        (h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{COOKIE}=")), None
    )


def account_bag(app, auth, client, *additions) -> int:
    """An account whose bag holds ``additions`` (each a dict of ``add`` arguments)."""
    user_id = auth.create_user()
    auth.login()
    for addition in additions:
        assert add(client, **addition).status_code == 303
    auth.logout()
    return user_id


def test_a_guest_bag_becomes_the_accounts_when_it_had_none(app, client, catalogue, auth):
    user_id = auth.create_user()
    add(client, quantity=2)
    [guest] = carts(app)
    response = auth.login()
    assert response.status_code == 303
    cleared = bag_cookie_header(response)
    assert cleared is not None
    assert "Expires=Thu, 01 Jan 1970" in cleared or "Max-Age=0" in cleared
    assert client.get_cookie(COOKIE) is None

    [cart] = carts(app)
    assert cart.id == guest.id
    assert cart.user_id == user_id
    assert cart.token is None
    page = client.get("/cart")
    assert "The 2 pieces in your bag are now saved to your account." in page_text(page)
    assert header_count(page) == 2


def test_one_piece_kept_at_sign_in_is_told_as_one(app, client, catalogue, auth):
    """It read "The 1 piece in your bag are now saved to your account" (found by review)."""
    auth.create_user()
    add(client)
    auth.login()
    assert "The piece in your bag is now saved to your account." in page_text(client.get("/cart"))


def test_signing_in_merges_identical_lines_and_adds_the_others(app, client, catalogue, auth):
    user_id = account_bag(
        app,
        auth,
        client,
        {"quantity": 1},
        {"slug": "lumiere-halo-ring", "metal": "platinum", "diamond": "0.50ct", "size": "5"},
    )
    assert page_text(client.get("/cart")).count("Your bag is empty.") == 1  # signed out

    add(client, quantity=2)
    add(client, slug=CHAIN, metal="yellow-gold")
    response = auth.login()
    assert bag_cookie_header(response) is not None

    [cart] = carts(app)  # the guest bag is gone
    assert cart.user_id == user_id
    assert sorted(lines(app), key=lambda line: line[0]) == [
        (CHAIN, {"metal": "yellow-gold"}, 1),
        (RING, RING_CHOICES, 3),
        ("lumiere-halo-ring", {"metal": "platinum", "diamond": "0.50ct", "size": "5"}, 1),
    ]
    text = page_text(client.get("/cart"))
    assert "was already in your bag: you now have 3." in text
    assert "Added Aurelia Fine Chain (18k yellow gold) from before you signed in." in text
    assert "Welcome back" in text


def test_merging_caps_at_the_stock(app, client, catalogue, auth):
    account_bag(app, auth, client, {"diamond": "1.00ct"})  # the last one
    add(client, diamond="1.00ct")
    auth.login()
    assert [quantity for *_, quantity in lines(app)] == [1]
    text = page_text(client.get("/cart"))
    assert "Only 1 left in 18k yellow gold with 1.00 ct, F colour, VVS2" in text


def test_merging_caps_at_five_per_line(app, client, catalogue, auth):
    account_bag(app, auth, client, {"slug": CHAIN, "metal": "yellow-gold", "quantity": 4})
    add(client, slug=CHAIN, metal="yellow-gold", quantity=3)
    auth.login()
    assert lines(app) == [(CHAIN, {"metal": "yellow-gold"}, 5)]
    assert "at most 5 of one piece" in page_text(client.get("/cart"))


def test_signing_out_leaves_the_bag_on_the_account(app, client, catalogue, auth):
    auth.create_user()
    auth.login()
    add(client, quantity=2)
    assert header_count(client.get("/")) == 2
    auth.logout()
    page = client.get("/cart")
    assert "Your bag is empty." in page_text(page)
    assert header_count(page) == 0
    auth.login()
    assert header_count(client.get("/cart")) == 2
    assert len(carts(app)) == 1


def test_another_device_sees_the_account_bag(app, client, catalogue, auth):
    account_bag(app, auth, client, {"quantity": 2})
    other = app.test_client()
    other.submit("/auth/login", {"email": "ada@example.com", "password": PASSWORD})
    assert header_count(other.get("/cart")) == 2


def test_a_tampered_bag_cookie_does_not_stop_sign_in(app, client, catalogue, auth):
    auth.create_user()
    client.set_cookie(COOKIE, "forged.value")
    response = auth.login()
    assert response.status_code == 303
    assert carts(app) == []


def test_a_guest_bag_is_not_merged_into_a_bag_being_paid_for(app, client, catalogue, auth):
    account_bag(app, auth, client, {"quantity": 1})
    with app.app_context():
        for cart in db.session.scalars(select(Cart)):
            cart.frozen_at = utcnow()
        db.session.commit()
        db.session.remove()
    add(client, slug=CHAIN, metal="yellow-gold")
    response = auth.login()
    assert response.status_code == 303
    assert bag_cookie_header(response) is None  # the guest bag stays where it was
    assert len(carts(app)) == 2
    assert "Your account's bag is being paid for on another device" in page_text(
        client.get("/account")
    )


def test_signing_in_with_an_emptied_guest_bag_keeps_the_account_bag(app, client, catalogue, auth):
    account_bag(app, auth, client, {"quantity": 1})
    add(client, slug=CHAIN, metal="yellow-gold")
    client.submit("/cart", {}, action=f"/cart/items/{line_ids(app)[-1]}/delete")
    auth.login()
    assert lines(app) == [(RING, RING_CHOICES, 1)]
    [cart] = carts(app)
    assert cart.token is None


def test_changing_the_password_keeps_the_bag(app, client, catalogue, auth):
    auth.create_user()
    auth.login()
    add(client, quantity=2)
    response = client.submit(
        "/account/profile",
        {"current_password": PASSWORD, "password": "a brand new passphrase 42"},
        action="/account/password",
    )
    assert response.status_code == 303
    assert header_count(client.get("/cart")) == 2


def test_signing_in_as_the_accounts_other_device_makes_its_first_bag_merges_into_it(
    app, client, catalogue, auth
):
    """The account had no bag, so the laptop's sign-in makes its guest bag the account's;
    meanwhile the phone, signed in, adds its first piece and makes the account's bag. Before,
    the sign-in answered 500 (the account has one bag) and the laptop's bag was left a
    guest's, which no signed-in page shows. Now it is merged into the phone's."""
    user_id = auth.create_user()
    phone = app.test_client()
    AuthActions(app, phone).login()
    phone.get(f"/shop/{RING}")
    add(client)  # the laptop's guest bag
    answers = []

    def phone_adds() -> None:
        data = {"product": RING, "quantity": "1", **RING_CHOICES, "engraving": "Phone"}
        answers.append(phone.htmx("POST", "/cart/items", data=data).status_code)

    with meanwhile(app, "UPDATE carts", lambda: in_another_window(phone_adds)) as ran:
        signed_in = auth.login()

    assert ran
    assert answers == [200]
    assert signed_in.status_code == 303
    [bag] = carts(app)
    assert bag.user_id == user_id
    assert sorted(line[0] for line in lines(app)) == [RING, RING]
    assert header_count(client.get("/cart")) == 2


def test_a_piece_added_as_another_tab_signs_in_is_not_refused_as_being_paid_for(
    app, client, catalogue, auth
):
    """A guest adds a chain in one tab just as another tab of the browser signs in, which
    merges the guest bag into the account's and deletes it. The add was refused with "Your bag
    is being paid for, so it can't change right now. Resume or cancel the payment first."
    though nothing was being paid for. It is now asked again, and goes to the account's bag."""
    account_bag(app, auth, client, {})
    assert add(client, slug=CHAIN, metal="yellow-gold").status_code == 303
    client.get(f"/shop/{CHAIN}")
    tab = same_browser(app, client)

    def the_other_tab_signs_in() -> None:
        assert AuthActions(app, tab).login().status_code == 303

    data = {"product": CHAIN, "quantity": "1", "metal": "yellow-gold"}
    with meanwhile(app, "UPDATE carts", lambda: in_another_window(the_other_tab_signs_in)) as ran:
        answer = client.post("/cart/items", data={"csrf_token": client.csrf_token, **data})

    assert ran
    assert answer.status_code == 409
    assert "being paid for" not in page_text(answer)
    assert "Your bag changed in another window just now. Please try again." in page_text(answer)
    # Tried again with the cookies the sign-in left (the tabs share them), it joins the
    # account's bag.
    for name in (app.config["SESSION_COOKIE_NAME"], COOKIE):
        client.delete_cookie(name)
        if (cookie := tab.get_cookie(name)) is not None:
            client.set_cookie(name, cookie.value)
    assert add(client, slug=CHAIN, metal="yellow-gold").status_code == 303
    assert [(slug, quantity) for slug, _, quantity in lines(app)] == [(RING, 1), (CHAIN, 2)]
    assert len(carts(app)) == 1


@pytest.mark.parametrize("accounts_bag", [False, True], ids=["none", "a bag"])
def test_a_double_click_on_sign_in_brings_the_guest_bag_once_and_keeps_it(
    app, client, catalogue, auth, accounts_bag
):
    """A guest with a bag presses "Sign in" twice (a double click, or two tabs). The second
    sign-in found the guest bag by its cookie just before the first made it the account's,
    and found it again, as the account's, just after: it merged the bag into itself, each
    line doubled, then deleted it, and the shopper signed in to an empty bag. Where the
    account had a bag, the second said "Your bag changed in another window just now" and
    kept the bag's cookie. The second sign-in now finds nothing left to bring."""
    if accounts_bag:
        user_id = account_bag(app, auth, client, {"slug": CHAIN, "metal": "rose-gold"})
    else:
        user_id = auth.create_user()
    assert add(client, quantity=2).status_code == 303
    assert add(client, slug=CHAIN, metal="yellow-gold").status_code == 303
    client.get("/auth/login")
    tab = same_browser(app, client)

    def the_first_click() -> None:
        assert AuthActions(app, tab).login().status_code == 303

    def looking_for_the_accounts_bag(statement: str) -> bool:
        return statement.startswith("SELECT carts.") and "carts.user_id = " in statement

    with meanwhile(
        app, looking_for_the_accounts_bag, lambda: in_another_window(the_first_click)
    ) as ran:
        second = client.post(
            "/auth/login",
            data={
                "csrf_token": client.csrf_token,
                "email": "ada@example.com",
                "password": PASSWORD,
            },
        )

    assert ran
    assert second.status_code == 303
    assert client.get_cookie(COOKIE) is None
    assert [bag.user_id for bag in carts(app)] == [user_id]
    expected = [(CHAIN, "yellow-gold", 1), (RING, "yellow-gold", 2)]
    if accounts_bag:
        expected.insert(0, (CHAIN, "rose-gold", 1))
    assert sorted((slug, choices["metal"], quantity) for slug, choices, quantity in lines(app)) == (
        expected
    )
    page = client.get("/cart")
    assert header_count(page) == sum(quantity for *_, quantity in expected)
    assert "changed in another window" not in page_text(page)


def check_out_as_another_tab_signs_in(shop_app, client):
    """The guest's checkout, sent as another tab of the same browser signs in (just before
    the checkout freezes the bag): its answer, and that other tab."""
    client.get("/checkout")
    tab = same_browser(shop_app, client)

    def the_other_tab_signs_in() -> None:
        assert AuthActions(shop_app, tab).login().status_code == 303

    def freezing(statement: str) -> bool:
        return statement.startswith("UPDATE carts SET frozen_at")

    with meanwhile(shop_app, freezing, lambda: in_another_window(the_other_tab_signs_in)) as ran:
        answer = check_out(client)
    assert ran
    return answer, tab


def test_a_checkout_begun_as_another_tab_signs_in_sends_the_shopper_back_to_the_bag(shop):
    """A guest goes to payment in one tab just as another tab signs in, moving the guest's
    bag into the account's: the checkout said the bag was already being paid for, and offered
    to resume a payment that didn't exist. It now sends the shopper back to the bag."""
    shop_app = shop.app
    auth = AuthActions(shop_app, shop.client())
    auth.create_user()
    auth.login()
    add_chain(auth.client)
    auth.logout()
    client = shop.client()
    add_chain(client)
    answer, _ = check_out_as_another_tab_signs_in(shop_app, client)

    assert answer.status_code == 303
    assert answer.location.endswith("/cart")
    page = page_text(client.get("/cart"))
    assert "Your bag changed as you continued to payment" in page
    assert "being paid for" not in page
    with shop_app.app_context():
        assert db.session.scalars(select(Order)).all() == []
        db.session.remove()


def test_a_guest_checkout_as_another_tab_signs_in_never_freezes_the_accounts_bag(shop):
    """The account has no bag. A guest goes to payment in one tab just as another tab signs
    in, and the guest's bag becomes the account's: the checkout froze what was now the
    account's bag for an order of a guest's (no account), which the account's orders never
    showed, and the account's bag stayed frozen for it. The shopper is now sent back to the
    bag, the account's, as when the guest's bag joins an account's bag."""
    shop_app = shop.app
    client = shop.client()
    user_id = AuthActions(shop_app, client).create_user()
    add_chain(client)
    answer, tab = check_out_as_another_tab_signs_in(shop_app, client)

    assert (answer.status_code, answer.location) == (303, "/cart")
    with shop_app.app_context():
        assert db.session.scalars(select(Order)).all() == []
        [bag] = db.session.scalars(select(Cart)).all()
        assert (bag.user_id, bag.frozen_at) == (user_id, None)
        db.session.remove()
    assert "Your bag changed as you continued to payment" in page_text(client.get("/cart"))
    assert "being paid for" not in page_text(tab.get("/cart"))
    assert add_chain(tab).status_code == 303  # the account's bag, free to change


def test_a_line_kept_above_the_stock_at_sign_in_is_not_said_to_be_lowered(
    app, client, catalogue, auth
):
    """The account's bag held 3 chains, then the stock fell to 2; a guest's chain joined it at
    sign-in. The line keeps its 3 (quantities change only when the shopper changes them), but
    the sign-in said "you now have 3" and "we've set your quantity to 2" in one breath."""
    set_stock(app, CHAIN, "yellow-gold", 3)
    account_bag(app, auth, client, {"slug": CHAIN, "metal": "yellow-gold", "quantity": 3})
    set_stock(app, CHAIN, "yellow-gold", 2)
    assert add(client, slug=CHAIN, metal="yellow-gold").status_code == 303

    auth.login()

    assert lines(app) == [(CHAIN, {"metal": "yellow-gold"}, 3)]
    text = page_text(client.get("/cart"))
    assert "we've set your quantity" not in text
    assert (
        "Aurelia Fine Chain (18k yellow gold) was already in your bag (3), so the one from "
        "before you signed in was not added. Only 2 left in 18k yellow gold."
    ) in text


def test_a_line_capped_at_sign_in_says_what_it_was_set_to(app, client, catalogue, auth):
    """The stock leaves room for some of the guest's pieces: the line is set to what is left."""
    set_stock(app, CHAIN, "yellow-gold", 3)
    account_bag(app, auth, client, {"slug": CHAIN, "metal": "yellow-gold", "quantity": 1})
    assert add(client, slug=CHAIN, metal="yellow-gold", quantity=3).status_code == 303

    auth.login()

    assert lines(app) == [(CHAIN, {"metal": "yellow-gold"}, 3)]
    assert (
        "was already in your bag: you now have 3. Only 3 left in 18k yellow gold — we've set "
        "your quantity to 3."
    ) in page_text(client.get("/cart"))
