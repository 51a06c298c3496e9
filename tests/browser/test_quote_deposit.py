"""A commission from quote to paid deposit in Chromium, with JavaScript and without: staff
(past the second factor) quote the lead, the client opens the quote's link from the email,
pays the deposit on the simulated Stripe page, comes back to the success page, and their
commissions say the deposit is paid."""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.sync_api import expect

from elysium.extensions import db
from elysium.models.engagement import BespokeLead, LeadStatus
from elysium.models.types import utcnow
from tests.browser.test_staff import sign_in_with_second_factor
from tests.conftest import PASSWORD, create_user, link_in, sent_emails
from tests.support.staff import create_staff

CLIENT = "grace@example.com"


def _lead(shop) -> int:
    with shop.app_context():
        user_id = create_user(CLIENT, first_name="Grace", last_name="Hopper")
        lead = BespokeLead(
            name="Grace Hopper",
            email=CLIENT,
            message="An emerald ring, like my grandmother's",
            status=LeadStatus.CONSULTATION,
            user_id=user_id,
        )
        db.session.add(lead)
        db.session.commit()
        lead_id = lead.id
        db.session.remove()
    return lead_id


def _context(browser, javascript: bool, base_url: str, errors: list[str]):
    context = browser.new_context(java_script_enabled=javascript, base_url=base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error"
            and message.location.get("url", "").startswith(base_url)
            and "status of 422" not in message.text
            else None
        ),
    )
    return context, page


def test_staff_quote_a_commission_and_the_client_pays_the_deposit(
    browser, javascript, shop_with_payments, live_fake_stripe, catalogue
):
    shop, base_url = shop_with_payments
    _, secret = create_staff(shop)
    lead_id = _lead(shop)
    reference = f"B{lead_id:05d}"
    errors: list[str] = []

    staff_context, staff = _context(browser, javascript, base_url, errors)
    try:
        sign_in_with_second_factor(staff, secret)
        staff.goto(f"/staff/leads/{lead_id}")
        quotes = staff.locator("#lead-quotes")
        quotes.get_by_label("What the price is for").fill("Emerald ring in 18k yellow gold")
        quotes.get_by_label("Price (£)").fill("4,800.00")
        quotes.get_by_label("Valid until").fill("2001-01-01")
        quotes.get_by_role("button", name="Send the quote").click()
        expect(staff.locator("#error-valid_until")).to_have_text("Choose a date after today.")
        expect(staff.get_by_label("Price (£)")).to_have_value("4,800.00")

        valid_until = (utcnow().date() + timedelta(days=30)).isoformat()
        staff.get_by_label("Valid until").fill(valid_until)
        staff.get_by_role("button", name="Send the quote").click()
        expect(staff.locator("#lead-quotes .lead-quote__state")).to_have_text("Current")
        expect(staff.locator("#lead-quotes .lead-quote__deposit")).to_have_text("£1,440")
    finally:
        staff_context.close()

    [email] = [e for e in sent_emails(shop, CLIENT) if e.template == "quote_sent"]
    link = link_in(email, "/bespoke/quote/")

    client_context, client = _context(browser, javascript, base_url, errors)
    try:
        client.goto("/auth/login")
        client.get_by_label("Email").fill(CLIENT)
        client.get_by_label("Password").fill(PASSWORD)
        client.get_by_role("button", name="Sign in").click()
        expect(client).to_have_url(re.compile("/account$"))

        client.goto(link)
        expect(client.locator(".quote-page__balance")).to_have_text("£3,360")
        client.get_by_role("button", name="Pay deposit of £1,440").click()

        expect(client.get_by_text("SIMULATED CHECKOUT")).to_be_visible()
        expect(client.get_by_text("£1,440").first).to_be_visible()
        client.get_by_role("button", name=re.compile("^Pay", re.I)).first.click()

        expect(client).to_have_url(re.compile("/checkout/success"))
        expect(client.get_by_text(re.compile("Paid"))).to_be_visible()
        expect(client.get_by_text(f"Deposit — commission #{reference}")).to_be_visible()

        client.goto("/account/commissions")
        commission = client.locator(f"#commission-{reference}")
        expect(commission.locator(".account-quote__paid")).to_contain_text("Deposit paid")
        expect(commission).to_contain_text("Won")
    finally:
        client_context.close()
    assert errors == []
