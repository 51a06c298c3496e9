"""Engravings the workshop actually cuts: accented letters, digits, the usual symbols
(♥ ∞ ★ ✝ &) and . , ' -; never control, text-direction or zero-width characters or emoji, each
refused with a message that names the problem. What is accepted reaches the bag, the order
page, the emails and the staff pages exactly as typed."""

from __future__ import annotations

import unicodedata

import pytest
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Order
from tests.conftest import link_in, page_text, sent_emails
from tests.html import Page, field_error, text_of
from tests.support.checkout import Shop, check_out, session_id_from
from tests.support.staff import staff_client

RING = "aurelia-solitaire-ring"
CHOICES = {"metal": "yellow-gold", "diamond": "0.30ct", "size": "6"}


def add(client, engraving: str):
    data = {"product": RING, "quantity": "1", **CHOICES, "engraving": engraving}
    return client.submit(f"/shop/{RING}", data, action="/cart/items")


@pytest.mark.parametrize(
    "engraving",
    [
        "Zoë & Léo ♥",
        "∞ ★ ✝",
        "Ça va, Øystein",
        "Müller 12.06.2024",
        "O'Brien - 1998",
        "Siân\u2019s, always",
        "Ελένη ♥ Νίκος",
    ],
)
def test_accents_digits_and_the_usual_symbols_are_accepted_and_shown_in_the_bag(
    client, catalogue, engraving
):
    response = add(client, engraving)
    assert response.status_code == 303, page_text(response)
    bag = Page(client.get("/cart"))
    assert f"engraved “{engraving}”" in text_of(bag, ".bag-line")


def test_the_hint_lists_what_can_be_engraved(client, catalogue):
    hint = text_of(Page(client.get(f"/shop/{RING}")), "#hint-engraving")
    assert hint == (
        "Up to 25 characters: letters (accents too), numbers, spaces and . , ' \u2019 - & ♥ ∞ ★ ✝"
    )


@pytest.mark.parametrize(
    ("engraving", "message"),
    [
        ("Lo\u202eve", "text-direction mark (U+202E)"),
        ("Lo\u2066ve", "text-direction mark (U+2066)"),
        ("Lo\u200fve", "text-direction mark (U+200F)"),
        ("Lo\u200bve", "zero-width space (U+200B)"),
        ("Lo\u200cve", "zero-width non-joiner (U+200C)"),
        ("Lo\u2060ve", "word joiner (U+2060)"),
        ("\ufeffLove", "zero-width no-break space (U+FEFF)"),
        ("\u3164", "Hangul filler (U+3164)"),  # a letter to Unicode that draws nothing
        ("A\u3164\u3164B", "Hangul filler (U+3164)"),
        ("\u115f\u1160", "Hangul filler (U+115F)"),
        ("Love\uffa0", "Hangul filler (U+FFA0)"),
        ("Lo\u0007ve", "control character (U+0007)"),
        ("Lo\tve", "a tab (U+0009)"),
        ("Love 😀", "Emoji can't be engraved (“😀”)"),
        ("Love ♥\ufe0f", "Emoji can't be engraved (“♥\ufe0f”)"),
        ("Go 🇬🇧", "Emoji can't be engraved"),
        ("Love ❤", "Emoji can't be engraved (“❤”)"),
        ("I <3 you", "“<” can't be engraved"),
        ("50% off", "“%” can't be engraved"),
    ],
)
def test_invisible_characters_and_emoji_are_refused_with_a_message_naming_them(
    client, catalogue, engraving, message
):
    response = add(client, engraving)
    assert response.status_code == 422
    assert message in field_error(response, "engraving")
    assert Page(client.get("/cart")).select(".bag-line") == []

    shown = client.get(f"/shop/{RING}", query_string={**CHOICES, "engraving": engraving})
    assert shown.status_code == 422
    assert message in field_error(shown, "engraving")


def test_the_limit_counts_characters_as_the_shopper_sees_them(client, catalogue):
    decomposed = "e\u0301" * 25  # 50 code points, 25 accented letters once composed
    response = add(client, decomposed)
    assert response.status_code == 303, page_text(response)
    assert f"engraved “{'é' * 25}”" in text_of(Page(client.get("/cart")), ".bag-line")

    refused = add(client, "e\u0301" * 26)
    assert refused.status_code == 422
    assert "at most 25 characters (this one has 26)" in field_error(refused, "engraving")

    # an accent no precomposed letter exists for still counts once, on its letter
    assert add(client, "q\u0301" + "a" * 24).status_code == 303

    # Two on a letter, as Vietnamese stacks them; not a pile of them, which the count never
    # saw (before: 150 accents on one letter went in the bag, the order and Stripe).
    assert add(client, "q\u0323\u0301uy").status_code == 303  # no letter composes them
    piled = add(client, "Ae" + "\u0301" * 150 + "x")
    assert piled.status_code == 422
    assert "at most 2 accents" in field_error(piled, "engraving")


def test_an_engraving_is_shown_exactly_on_the_order_page_emails_and_staff_pages(shop: Shop, app):
    engraving = "Zoë & Léo ♥ ∞ ★ ✝"
    client = shop.client()
    assert add(client, engraving).status_code == 303
    response = check_out(client, email="zoe@example.com")
    assert response.status_code == 303, page_text(response)
    session_id = session_id_from(response.location)
    shop.fake.pay(session_id)
    with shop.app.app_context():
        number = db.session.scalars(
            select(Order.number).where(Order.stripe_checkout_session_id == session_id)
        ).one()
        line = db.session.scalars(select(Order).where(Order.number == number)).one().lines[0]
        assert line.configuration["engraving"] == unicodedata.normalize("NFC", engraving)
        db.session.remove()

    [email] = [e for e in sent_emails(app, "zoe@example.com") if number in e.subject]
    assert f"engraved “{engraving}”" in email.body_text
    assert "Zoë &amp; Léo ♥ ∞ ★ ✝" in email.body_html
    assert f"engraved “{engraving}”" in text_of(Page(email.body_html))

    order_page = Page(client.get(link_in(email, "/orders/")))
    assert f"engraved “{engraving}”" in text_of(order_page, ".order-line__config")

    staff = staff_client(app)
    staff_page = Page(staff.get(f"/staff/orders/{number}"))
    assert staff_page.one(".engraving").get_text() == engraving
