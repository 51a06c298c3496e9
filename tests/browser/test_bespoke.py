"""A bespoke request in Chromium, with and without JavaScript: from a product page "Make it
yours" brings the piece along; a wrong date is caught (as the shopper leaves the field with
JavaScript, on sending without), corrected without retyping anything, and the thank-you page
gives the reference."""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.sync_api import Page, expect

from elysium.services import bespoke
from tests.browser.test_storefront import mark_page, same_page

PAST = "That date has passed: choose a day from today on."


def test_from_a_piece_to_a_request_correcting_a_date_on_the_way(
    page: Page, app, catalogue, javascript, monkeypatch
):
    monkeypatch.setitem(app.config, "BESPOKE_MIN_FILL_SECONDS", 0)  # a robot fills in fast
    page.goto("/shop/aurelia-solitaire-ring")
    page.locator("label.choice", has_text="18k rose gold").click()
    if not javascript:
        page.get_by_role("button", name="Update price").click()
    make_it_yours = page.get_by_role("link", name="Make it yours")
    # with htmx the price answer brings the link up to date with the choice
    expect(make_it_yours).to_have_attribute("href", re.compile("metal=rose-gold"))
    make_it_yours.click()

    expect(page).to_have_url(re.compile(r"/bespoke\?from=aurelia-solitaire-ring&metal=rose-gold"))
    piece = page.locator(".bespoke__piece")
    expect(piece).to_contain_text("Aurelia Solitaire Ring")
    expect(piece).to_contain_text("18k rose gold")
    expect(piece.get_by_role("img")).to_have_attribute("src", re.compile("/rose-gold/"))
    expect(page.get_by_label("Start from this piece")).to_be_checked()
    expect(page.get_by_label("What would you like made?")).to_have_value("ring")
    mark_page(page, javascript)

    today = bespoke.today()
    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Budget").select_option("5000-10000")
    wanted_by = page.get_by_label("Wanted by")
    wanted_by.fill((today - timedelta(days=1)).isoformat())
    idea = page.get_by_label("Your idea, in your own words")
    idea.fill("Rose gold, with <the> sapphire from my mother's ring & a little engraving.")
    page.get_by_label("I'm happy for ELYSIUM to contact me about this request").check()
    error = page.locator("#error-bespoke-wanted_by")

    if javascript:
        # Leaving the field was enough: the message is beside it, nothing else moved.
        expect(error).to_have_text(PAST)
        wanted_by.fill((today + timedelta(days=60)).isoformat())
        idea.focus()
        expect(error).to_have_text("")
        assert same_page(page)
    else:
        expect(error).to_have_text("")
        page.get_by_role("button", name="Send my request").click()
        expect(error).to_have_text(PAST)
        # Everything typed is still there.
        expect(page.get_by_label("Your name")).to_have_value("Ada Lovelace")
        expect(page.get_by_label("Email")).to_have_value("ada@example.com")
        expect(page.get_by_label("Budget")).to_have_value("5000-10000")
        expect(page.get_by_label("Metal")).to_have_value("rose-gold")
        expect(wanted_by).to_have_value((today - timedelta(days=1)).isoformat())
        expect(idea).to_have_value(
            "Rose gold, with <the> sapphire from my mother's ring & a little engraving."
        )
        expect(page.get_by_label("Start from this piece")).to_be_checked()
        expect(
            page.get_by_label("I'm happy for ELYSIUM to contact me about this request")
        ).to_be_checked()
        wanted_by.fill((today + timedelta(days=60)).isoformat())

    page.get_by_role("button", name="Send my request").click()
    expect(page).to_have_url(re.compile(r"/bespoke/thanks$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you")
    expect(page.locator("#bespoke-reference")).to_have_text(re.compile(r"^B\d{5}$"))
    expect(page.locator(".bespoke__message")).to_have_text(
        "Rose gold, with <the> sapphire from my mother's ring & a little engraving."
    )
    expect(page.locator(".bespoke__summary")).to_contain_text("Aurelia Solitaire Ring")


def test_an_idea_holding_a_character_we_cant_read_loses_nothing_typed(
    page: Page, app, catalogue, javascript, monkeypatch
):
    """A NUL pasted into the idea: with JavaScript, leaving the field swapped the whole page
    for a show-back of that field alone, and the name, email and phone typed were gone
    (found by review). Now the form stays as typed with the message above it; without
    JavaScript, sending it shows back every field to copy."""
    monkeypatch.setitem(app.config, "BESPOKE_MIN_FILL_SECONDS", 0)
    page.expected_statuses = {400}
    page.goto("/bespoke")
    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Phone").fill("020 7946 0000")
    idea = page.get_by_label("Your idea, in your own words")
    idea.fill("A ring for our tenth anniversary\x00, with my grandmother's stone.")

    if javascript:
        idea.press("Tab")
        expect(page.locator("#messages")).to_contain_text("characters we can't read")
        expect(page.get_by_label("Your name")).to_have_value("Ada Lovelace")
        expect(page.get_by_label("Phone")).to_have_value("020 7946 0000")
    else:
        page.get_by_role("button", name="Send my request").click()
        expect(page.locator("h1")).to_have_text("Your form was not sent")
        kept = page.locator("textarea[readonly]")
        expect(kept.filter(has_text="Ada Lovelace")).to_have_count(1)
        expect(kept.filter(has_text="020 7946 0000")).to_have_count(1)
        expect(kept.filter(has_text="grandmother's stone")).to_have_count(1)
