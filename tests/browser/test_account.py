"""Sign up, sign in and keep an address book, in Chromium, with and without JavaScript."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.test_storefront import mark_page, same_page
from tests.conftest import PASSWORD, link_in, sent_emails


def sign_in(page: Page, email: str = "ada@example.com", password: str = PASSWORD) -> None:
    page.goto("/auth/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(re.compile(r"/account$"))


def test_sign_up_confirm_the_email_and_sign_in_again(page: Page, app, javascript):
    page.goto("/auth/register")
    page.get_by_label("First name").fill("Grace")
    page.get_by_label("Last name").fill("Hopper")
    page.get_by_label("Email").fill("grace@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/auth/check-inbox"))

    [email] = sent_emails(app, "grace@example.com")
    page.goto(link_in(email, "/auth/confirm/"))
    page.get_by_label("Your password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm my email").click()
    expect(page).to_have_url(re.compile(r"/account$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Grace Hopper")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    sign_in(page, "grace@example.com")
    expect(page.get_by_text("You haven't ordered anything yet")).to_be_visible()


def test_add_an_address_then_edit_it(page: Page, auth, javascript):
    auth.create_user()
    sign_in(page)
    page.get_by_role("link", name="Manage addresses").click()
    expect(page).to_have_url(re.compile(r"/account/addresses$"))
    expect(page.get_by_text("You have no saved addresses yet.")).to_be_visible()
    mark_page(page, javascript)

    form = page.locator("#address-form")
    form.get_by_label("Full name").fill("Ada Lovelace")
    form.get_by_label("Address line 1").fill("12 St James's Square")
    form.get_by_label("Town or city").fill("London")
    form.get_by_label("Postcode").fill("sw1y 4jh")
    form.get_by_role("button", name="Add address").click()

    card = page.locator(".address-card")
    expect(card).to_have_count(1)
    expect(card).to_contain_text("SW1Y 4JH")
    expect(card).to_contain_text("Default shipping")
    expect(page.get_by_text("Address added.")).to_be_visible()
    expect(page.get_by_text("You have no saved addresses yet.")).to_be_hidden()
    expect(page.locator("#address-form").get_by_label("Full name")).to_have_value("")
    if javascript:
        assert same_page(page), "with htmx the new card should appear without a reload"

    card.get_by_role("link", name=re.compile("^Edit")).click()
    editing = page.locator("form.address-card--editing")
    expect(editing.get_by_label("Address line 1")).to_have_value("12 St James's Square")
    # The form takes the focus (autofocus); type only once it has, as a person would. With
    # htmx, Chromium may focus the new field before htmx's settle step focuses it again: wait
    # for the swap to settle, or that second focus lands in the middle of the typing.
    expect(editing.get_by_label("Full name")).to_be_focused()
    expect(page.locator(".htmx-added, .htmx-settling")).to_have_count(0)
    if not javascript:
        expect(page).to_have_url(re.compile(r"/account/addresses/\d+/edit$"))

    editing.get_by_label("Postcode").fill("nonsense")
    editing.get_by_role("button", name="Save address").click()
    expect(page.get_by_text("Enter a postcode like SW1A 1AA.")).to_be_visible()
    editing = page.locator("form.address-card--editing")
    expect(editing.get_by_label("Postcode")).to_have_value("nonsense")
    expect(editing.get_by_label("Postcode")).to_be_focused()  # the first field with an error

    editing.get_by_label("Address line 1").fill("10 Downing Street")
    editing.get_by_label("Postcode").fill("SW1A 2AA")
    editing.get_by_role("button", name="Save address").click()

    card = page.locator("article.address-card")
    expect(card).to_have_count(1)
    expect(card).to_contain_text("10 Downing Street")
    expect(card).to_contain_text("SW1A 2AA")
    expect(page.get_by_text("Address saved.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/account/addresses$"))
    if javascript:
        assert same_page(page), "with htmx the card should update in place"
