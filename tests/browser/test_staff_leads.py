"""Commissions in the back office, in Chromium with JavaScript and without: a member of staff
opens the commissions, picks a status tab, opens a lead, marks it contacted and writes a note,
and both are on the lead's timeline (and still there when the page is loaded again)."""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.sync_api import expect

from elysium.extensions import db
from elysium.models.engagement import BespokeLead, LeadStatus
from elysium.models.types import utcnow
from elysium.web.staff_session import LAST_SEEN
from tests.browser.test_staff import sign_in_with_second_factor
from tests.support.staff import STAFF_EMAIL, create_staff


def add_lead(app, name: str, status: LeadStatus) -> int:
    with app.app_context():
        lead = BespokeLead(
            name=name,
            email=f"{name.split()[0].lower()}@example.com",
            message="A ring like my grandmother's,\nbut smaller.",
            category="Ring",
            status=status,
        )
        db.session.add(lead)
        db.session.commit()
        lead_id = lead.id
        db.session.remove()
    return lead_id


def test_staff_find_a_lead_by_tab_move_it_and_note_it(page, app, javascript):
    _, secret = create_staff(app)
    grace = add_lead(app, "Grace Hopper", LeadStatus.NEW)
    add_lead(app, "Alan Turing", LeadStatus.LOST)
    reference = f"B{grace:05d}"

    sign_in_with_second_factor(page, secret)
    page.get_by_role("navigation", name="Back office").get_by_role(
        "link", name="Commissions"
    ).click()
    expect(page).to_have_url(re.compile("/staff/leads$"))
    results = page.locator("#lead-results")
    expect(results.get_by_text("Grace Hopper")).to_be_visible()
    expect(results.get_by_text("Alan Turing")).to_have_count(0)

    tabs = page.get_by_role("navigation", name="Commissions by status")
    tabs.get_by_role("link", name=re.compile("^Lost")).click()
    expect(page).to_have_url(re.compile(r"/staff/leads\?tab=lost$"))
    expect(results.get_by_text("Alan Turing")).to_be_visible()
    expect(results.get_by_text("Grace Hopper")).to_have_count(0)
    tabs.get_by_role("link", name=re.compile("^All")).click()
    expect(page).to_have_url(re.compile(r"/staff/leads\?tab=all$"))
    expect(results.get_by_text("Alan Turing")).to_be_visible()

    results.get_by_role("link", name=reference).click()
    expect(page).to_have_url(re.compile(f"/staff/leads/{grace}$"))
    expect(page.get_by_role("heading", name=f"Commission {reference}")).to_be_visible()
    expect(page.locator(".lead-idea")).to_have_text("A ring like my grandmother's,\nbut smaller.")

    page.get_by_role("button", name="Mark contacted").click()
    expect(page.get_by_text("The commission is now contacted.")).to_be_visible()
    expect(page.locator(".lead-status__now")).to_have_text("Contacted")

    page.get_by_label("Internal note").fill("Call back on Friday <b>after</b> four.")
    page.get_by_role("button", name="Add note").click()
    expect(page.get_by_text("Note added.")).to_be_visible()

    timeline = page.locator("#lead-timeline")
    expect(timeline.locator(".staff-timeline__title")).to_have_text(["New → Contacted"])
    expect(timeline.locator(".staff-timeline__text")).to_have_text(
        ["Call back on Friday <b>after</b> four."]
    )
    expect(timeline.locator(".staff-timeline__who").first).to_have_text(STAFF_EMAIL)

    page.reload()
    expect(timeline.locator(".staff-timeline__entry")).to_have_count(2)
    expect(page.get_by_label("Internal note")).to_have_value("")
    with app.app_context():
        assert db.session.get(BespokeLead, grace).status is LeadStatus.CONTACTED
        db.session.remove()


def test_a_note_written_past_the_idle_sign_out_is_shown_back_to_copy(page, app, javascript):
    """Thirty minutes on one lead's page writing a note: sending it signs the member of staff
    out, and what they wrote is on the page that says so, to copy, with or without htmx."""
    _, secret = create_staff(app)
    grace = add_lead(app, "Grace Hopper", LeadStatus.NEW)
    sign_in_with_second_factor(page, secret)
    page.goto(f"/staff/leads/{grace}")
    page.get_by_label("Internal note").fill("Call back on Friday,\nafter four.")
    _idle_for(page, app, timedelta(minutes=31))
    page.expected_statuses.add(403)

    page.get_by_role("button", name="Add note").click()

    expect(page.get_by_role("heading", name="You were signed out")).to_be_visible()
    expect(page.get_by_role("textbox")).to_have_value("Call back on Friday,\nafter four.")
    expect(page.get_by_text("Grace Hopper")).to_have_count(0)
    page.get_by_role("link", name="Sign in again").click()
    expect(page).to_have_url(re.compile(f"/auth/login\\?next=/staff/leads/{grace}$"))


def _idle_for(page, app, idle: timedelta) -> None:
    """The browser's session as if its last back-office page was ``idle`` ago."""
    [cookie] = [c for c in page.context.cookies() if c["name"] == app.config["SESSION_COOKIE_NAME"]]
    signing = app.session_interface.get_signing_serializer(app)
    session = signing.loads(cookie["value"])
    session[LAST_SEEN] = (utcnow() - idle).timestamp()
    page.context.add_cookies([{**cookie, "value": signing.dumps(session)}])


def test_the_commissions_table_is_readable_on_a_phone(page, app, javascript):
    """Squeezed into a 390 px phone, the table broke a client's email into lines of five letters;
    it now keeps its width and scrolls sideways, the reference staying in view (found by
    review)."""
    _, secret = create_staff(app)
    with app.app_context():
        lead = BespokeLead(
            name="Mary Somerville",
            email="mary.somerville.long.address@example.co.uk",
            message="Pearl drops for a June wedding.",
            status=LeadStatus.NEW,
        )
        db.session.add(lead)
        db.session.commit()
        reference = lead.reference
        db.session.remove()
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in_with_second_factor(page, secret)
    page.goto("/staff/leads")
    email = page.locator(".lead-row__email")
    expect(email).to_have_text("mary.somerville.long.address@example.co.uk")
    assert email.bounding_box()["width"] >= 190

    table = page.locator("#lead-results .order-table__scroll")
    table.evaluate("scroller => { scroller.scrollLeft = scroller.scrollWidth; }")
    shown = table.bounding_box()
    link = page.get_by_role("link", name=reference).bounding_box()
    assert shown["x"] <= link["x"]
    assert link["x"] + link["width"] <= shown["x"] + shown["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
