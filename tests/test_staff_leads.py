"""The back office's commissions (bespoke leads): the list (status tabs with counts, search,
assignee, sort, pages, htmx with the URL following), one lead with everything the shopper
sent, its status moves, assignee, notes and timeline, and the dashboard's new commissions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Product, User
from elysium.models.engagement import BespokeLead, LeadStatus
from elysium.services import leads
from tests.conftest import PASSWORD, ShopClient, create_user, page_text
from tests.html import Page, elements, field_error, form_fields, text_of
from tests.support.meanwhile import in_another_window, meanwhile
from tests.support.staff import STAFF_EMAIL, create_staff, staff_client, unused_code

L = LeadStatus
RING = "aurelia-solitaire-ring"
SECOND_FACTOR = "/staff/security/second-factor"


def add_lead(app: Flask, status: LeadStatus = L.NEW, **fields) -> int:
    """A commission straight in the database (the shopper's form has its own tests)."""
    with app.app_context():
        lead = BespokeLead(
            name=fields.pop("name", "Grace Hopper"),
            email=fields.pop("email", "grace@example.com"),
            message=fields.pop("message", "A ring for our anniversary"),
            status=status,
            **fields,
        )
        db.session.add(lead)
        db.session.commit()
        lead_id = lead.id
        db.session.remove()
    return lead_id


def lead_state(app: Flask, lead_id: int) -> tuple[LeadStatus, list[tuple]]:
    """The lead's status and its timeline as (from, to, actor, actor_user_id, note)."""
    with app.app_context():
        lead = db.session.get(BespokeLead, lead_id)
        events = [
            (e.from_status, e.to_status, e.actor, e.actor_user_id, e.note) for e in lead.events
        ]
        status = lead.status
        db.session.remove()
    return status, events


def staff_id(app: Flask, email: str = STAFF_EMAIL) -> int:
    with app.app_context():
        found = db.session.scalars(select(User.id).where(User.email == email)).one()
        db.session.remove()
    return found


@pytest.fixture
def staff(app: Flask) -> ShopClient:
    return staff_client(app)


def references(response) -> list[str]:
    return [text_of(cell) for cell in elements(response, "#lead-results .lead-row__reference")]


def ref(lead_id: int) -> str:
    return f"B{lead_id:05d}"


def counts(response) -> dict[str, int]:
    return {
        str(badge["id"]).removeprefix("count-"): int(text_of(badge))
        for badge in elements(response, "#lead-tabs .order-tabs__count")
    }


def move(client: ShopClient, lead_id: int, to: str, seen: str, *, htmx=False, note=""):
    client.get(f"/staff/leads/{lead_id}")
    data = {"to": to, "seen": seen, "status_note": note}
    if htmx:
        return client.htmx("POST", f"/staff/leads/{lead_id}/status", data=data)
    data["csrf_token"] = client.csrf_token
    return client.post(f"/staff/leads/{lead_id}/status", data=data)


# The list


def test_the_tabs_count_each_status_and_the_list_opens_on_new(staff, app):
    new = [add_lead(app), add_lead(app)]
    for status in (L.CONTACTED, L.CONSULTATION, L.QUOTED, L.WON, L.LOST, L.LOST):
        add_lead(app, status)

    page = staff.get("/staff/leads")

    assert page.status_code == 200
    assert counts(page) == {
        "new": 2,
        "contacted": 1,
        "consultation": 1,
        "quoted": 1,
        "won": 1,
        "lost": 2,
        "all": 8,
    }
    assert [text_of(a).rsplit(" ", 1)[0] for a in elements(page, "#lead-tabs a")] == [
        "New",
        "Contacted",
        "Consultation",
        "Quoted",
        "Won",
        "Lost",
        "All",
    ]
    assert text_of(Page(page).one('#lead-tabs a[aria-current="page"]')).startswith("New")
    assert references(page) == [ref(new[1]), ref(new[0])]
    assert len(references(staff.get("/staff/leads?tab=lost"))) == 2
    assert len(references(staff.get("/staff/leads?tab=all"))) == 8
    nav = Page(page).one('.staff-nav a[aria-current="page"]')
    assert (text_of(nav), nav["href"]) == ("Commissions", "/staff/leads")
    unknown = staff.get("/staff/leads?tab=maybe&sort=sideways")
    assert unknown.status_code == 200
    assert "We ignored the unknown tab “maybe”." in text_of(unknown, "#lead-results .notes")


def test_each_row_shows_reference_date_contact_piece_budget_date_assignee_status(staff, app):
    keeper = staff_id(app)
    lead_id = add_lead(
        app,
        L.CONTACTED,
        name="Ada <b>Lovelace</b>",
        email="ada@example.com",
        category="Engagement ring",
        budget="£5,000 to £10,000",
        wanted_by=date(2027, 2, 14),
        assigned_to_id=keeper,
        created_at=datetime(2026, 11, 3, 9, 30, tzinfo=UTC),
    )

    page = staff.get("/staff/leads?tab=contacted")

    [row] = elements(page, f"#lead-{lead_id}")
    assert text_of(row, ".lead-row__reference") == ref(lead_id)
    assert row.select_one(".lead-row__reference")["href"] == f"/staff/leads/{lead_id}"
    assert "3 Nov 2026, 09:30" in text_of(row)
    assert text_of(row, ".lead-row__name") == "Ada <b>Lovelace</b>"
    assert not row.select("b")
    assert text_of(row, ".lead-row__email") == "ada@example.com"
    assert text_of(row, ".lead-row__piece") == "Engagement ring"
    assert text_of(row, ".lead-row__budget") == "£5,000 to £10,000"
    assert text_of(row, ".lead-row__wanted") == "14 Feb 2027"
    assert text_of(row, ".lead-row__assignee") == "Kit Keeper"
    assert text_of(row, ".lead-row__status") == "Contacted"


def test_search_finds_a_lead_by_reference_name_email_or_the_idea(staff, app):
    grace = add_lead(app, name="Grace Hopper", email="grace@navy.example", message="Cufflinks")
    ada = add_lead(
        app, name="Ada Lovelace", email="ada@example.com", message="A ring\nwith 100% sapphire"
    )
    add_lead(app, name="Alan Turing", email="alan@example.com", message="A chess piece pendant")

    def found(q: str, tab: str = "all") -> list[str]:
        return references(staff.get("/staff/leads", query_string={"q": q, "tab": tab}))

    assert found(ref(ada)) == [ref(ada)]
    assert found(ref(ada).lower()) == [ref(ada)]
    assert found("hopper") == [ref(grace)]
    assert found("NAVY.example") == [ref(grace)]
    assert found("sapphire") == [ref(ada)]
    assert found("100%") == [ref(ada)]  # a % is a character, not a wildcard
    assert found("ring ada") == [ref(ada)]  # every word must match
    assert found("nobody") == []
    narrowed = staff.get("/staff/leads?q=hopper")
    assert counts(narrowed)["new"] == 1
    assert counts(narrowed)["all"] == 1


def test_the_assignee_filter_picks_anyone_nobody_me_or_one_member_of_staff(staff, app):
    me = staff_id(app)
    with app.app_context():
        other = create_user("sam@elysium.example", first_name="Sam", last_name="Setter")
        db.session.get(User, other).role = "staff"
        db.session.commit()
        db.session.remove()
    mine = add_lead(app, assigned_to_id=me)
    theirs = add_lead(app, assigned_to_id=other)
    nobodys = add_lead(app)

    def found(assignee: str) -> list[str]:
        return references(staff.get(f"/staff/leads?assignee={assignee}"))

    assert found("") == [ref(nobodys), ref(theirs), ref(mine)]
    assert found("none") == [ref(nobodys)]
    assert found("me") == [ref(mine)]
    assert found(str(other)) == [ref(theirs)]
    odd = staff.get("/staff/leads?assignee=%C2%B2")  # a digit int() can't read
    assert odd.status_code == 200
    assert "We ignored the unknown assigned to “²”." in text_of(odd, "#lead-results .notes")
    page = Page(staff.get("/staff/leads"))
    options = {o["value"]: text_of(o) for o in page.select("select#assignee option")}
    assert options == {
        "": "Anyone",
        "none": "Nobody yet",
        "me": "Me",
        str(me): "Kit Keeper",
        str(other): "Sam Setter",
    }


def test_leads_sort_oldest_first_and_come_in_pages(staff, app):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = [add_lead(app, created_at=start + timedelta(hours=n)) for n in range(27)]

    first = staff.get("/staff/leads")
    second = staff.get("/staff/leads?page=2")
    oldest = staff.get("/staff/leads?sort=oldest")

    assert references(first) == [ref(n) for n in reversed(made)][:25]
    assert references(second) == [ref(made[1]), ref(made[0])]
    assert references(oldest)[:2] == [ref(made[0]), ref(made[1])]
    assert Page(first).one('.pagination a[rel="next"]')["href"] == "/staff/leads?page=2"
    assert text_of(first, ".pagination__status") == "Page 1 of 2"
    past = staff.get("/staff/leads?page=9")
    assert references(past) == references(second)
    assert "There is no page 9; here is page 2." in text_of(past, "#lead-results .notes")


def test_htmx_gets_the_results_and_the_url_follows(staff, app):
    lead_id = add_lead(app, name="Grace Hopper")
    add_lead(app, L.LOST, name="Alan Turing")

    page = staff.get("/staff/leads?q=grace&sort=oldest")
    fragment = staff.htmx("GET", "/staff/leads?q=grace&sort=oldest&assignee=&page=1")

    assert fragment.status_code == 200
    assert [element["id"] for element in Page(fragment).top()] == ["lead-results"]
    assert references(fragment) == [ref(lead_id)]
    assert fragment.headers["HX-Push-Url"] == "/staff/leads?q=grace&sort=oldest"
    assert "HX-Request" in fragment.headers["Vary"]
    assert "HX-Request" in page.headers["Vary"]
    assert page.headers["Cache-Control"] == "no-store"
    whole = Page(page)
    assert references(page) == [ref(lead_id)]
    form = whole.one("form#lead-filters")
    assert (form["method"], form["action"], form["hx-get"]) == (
        "get",
        "/staff/leads",
        "/staff/leads",
    )
    assert (form["hx-target"], form["hx-push-url"]) == ("#lead-results", "true")
    assert whole.one('input[name=tab][form="lead-filters"]')["value"] == "new"
    for link in whole.select("#lead-tabs a"):
        assert link["hx-get"] == link["href"]
        assert link["hx-push-url"] == "true"
        assert "q=grace" in link["href"]
        assert "sort=oldest" in link["href"]


# One lead


def test_the_lead_page_shows_everything_the_shopper_sent_as_typed(staff, app, catalogue):
    with app.app_context():
        ring = db.session.scalars(select(Product).where(Product.slug == RING)).one()
        ring_id = ring.id
        db.session.remove()
    idea = (
        "Something like my grandmother's ring,\n  but <script>alert(1)</script> & smaller."
        "\n\nThanks!"
    )
    lead_id = add_lead(
        app,
        name="Ada <i>Lovelace</i>",
        email="ada@example.com",
        phone="+44 (0)20 7946 0000",
        category="Engagement ring",
        preferred_metal="Platinum",
        budget="Up to £8,000",
        wanted_by=date(2027, 2, 14),
        message=idea,
        product_id=ring_id,
        configuration={"metal": "platinum", "diamond": "0.50ct", "size": "6"},
        contact_consent=True,
    )

    response = staff.get(f"/staff/leads/{lead_id}")

    assert response.status_code == 200
    page = Page(response)
    assert text_of(page, "h1") == f"Commission {ref(lead_id)}"
    assert page.one(".lead-idea").get_text() == idea
    assert "<script>alert(1)</script>" in page_text(response)
    assert not page.select("main script")
    assert text_of(page, ".lead-contact__name") == "Ada <i>Lovelace</i>"
    assert not page.select("main i")
    assert page.one(".lead-contact__email")["href"] == "mailto:ada@example.com"
    assert page.one(".lead-contact__phone")["href"] == "tel:+4402079460000"
    assert text_of(page, ".lead-contact__phone") == "+44 (0)20 7946 0000"
    assert text_of(page, ".lead-contact__consent") == "Yes"
    assert text_of(page, ".lead-request__piece") == "Engagement ring"
    assert text_of(page, ".lead-request__metal") == "Platinum"
    assert text_of(page, ".lead-request__budget") == "Up to £8,000"
    assert text_of(page, ".lead-request__wanted") == "14 February 2027"
    piece = page.one(".lead-piece")
    link = piece.select_one(".lead-piece__link")
    assert text_of(link) == "Aurelia Solitaire Ring"
    assert link["href"].startswith(f"/shop/{RING}?")
    assert "metal=platinum" in link["href"]
    image = piece.select_one("img")
    assert "platinum" in image["src"]
    assert staff.get(image["src"]).status_code == 200
    assert image["alt"] == "Aurelia Solitaire Ring in platinum with a 0.50 ct diamond"
    assert staff.get(link["href"]).status_code == 200
    assert staff.get("/staff/leads/999999").status_code == 404


def test_a_status_move_without_javascript_is_recorded_with_who_and_when(staff, app):
    lead_id = add_lead(app)
    page = Page(staff.get(f"/staff/leads/{lead_id}"))
    buttons = {b["value"]: text_of(b) for b in page.select("#lead-status button[name=to]")}
    assert set(buttons) == {"contacted", "consultation", "lost"}  # quoted comes from a quote
    assert page.one("#lead-status input[name=seen]")["value"] == "new"
    before = datetime.now(UTC)

    response = move(staff, lead_id, "contacted", "new", note="Called her, lovely chat.")

    assert response.status_code == 303
    assert response.location == f"/staff/leads/{lead_id}#lead-status"
    status, events = lead_state(app, lead_id)
    assert status is L.CONTACTED
    assert events == [(L.NEW, L.CONTACTED, STAFF_EMAIL, staff_id(app), "Called her, lovely chat.")]
    shown = Page(staff.get(response.location))
    assert "The commission is now contacted." in text_of(shown, "#messages")
    [entry] = shown.select("#lead-timeline .staff-timeline__entry--status")
    assert text_of(entry, ".staff-timeline__title") == "New → Contacted"
    assert text_of(entry, ".staff-timeline__who") == STAFF_EMAIL
    assert text_of(entry, ".staff-timeline__text") == "Called her, lovely chat."
    when = datetime.fromisoformat(entry.select_one("time")["datetime"])
    assert before - timedelta(seconds=1) <= when <= datetime.now(UTC)
    assert text_of(shown, ".lead-status__now") == "Contacted"


def test_a_status_move_with_htmx_swaps_the_status_and_the_timeline(staff, app):
    lead_id = add_lead(app, L.CONTACTED)

    response = move(staff, lead_id, "consultation", "contacted", htmx=True)

    assert response.status_code == 200
    page = Page(response)
    assert [element["id"] for element in page.top()][:3] == [
        "lead-status",
        "lead-status-badge",
        "lead-timeline",
    ]
    assert page.one("#lead-status-badge")["hx-swap-oob"] == "true"
    assert text_of(page, "#lead-status-badge") == "Consultation"
    assert text_of(page, ".lead-status__now") == "Consultation"
    assert page.one("#lead-status input[name=seen]")["value"] == "consultation"
    assert page.one("#lead-timeline")["hx-swap-oob"] == "true"
    assert text_of(page, "#lead-timeline .staff-timeline__title") == "Contacted → Consultation"
    assert "The commission is now consultation." in text_of(page, "#messages")
    assert lead_state(app, lead_id)[0] is L.CONSULTATION


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize(
    ("status", "to", "code"),
    [
        (L.NEW, "won", 409),  # not a move the rules allow
        (L.NEW, "quoted", 409),  # sending a quote does that
        (L.WON, "lost", 409),  # a won commission doesn't move
        (L.NEW, "finished", 422),  # not a status
    ],
)
def test_a_move_the_rules_refuse_changes_nothing(staff, app, htmx, status, to, code):
    lead_id = add_lead(app, status)

    response = move(staff, lead_id, to, status.value, htmx=htmx)

    assert response.status_code == code
    assert lead_state(app, lead_id) == (status, [])
    if htmx:
        assert "notice--error" in Page(response).one("#messages .notice")["class"]
    else:
        assert text_of(Page(response), "h1") == f"Commission {ref(lead_id)}"


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_lead_someone_else_moved_first_is_not_moved_again(staff, app, htmx):
    lead_id = add_lead(app)
    staff.get(f"/staff/leads/{lead_id}")
    with app.app_context():
        lead = leads.lock_lead(db.session, lead_id)
        leads.move(db.session, lead, L.LOST, actor="sam@elysium.example", note="Went elsewhere")
        db.session.commit()
        db.session.remove()

    response = move(staff, lead_id, "contacted", "new", htmx=htmx, note="Called her")

    assert response.status_code == 409
    status, events = lead_state(app, lead_id)
    assert status is L.LOST
    assert len(events) == 1
    page = Page(response)
    message = "Someone else changed this commission first: it is now lost."
    assert message in page_text(response)
    assert text_of(page, ".lead-status__now") == "Lost"
    assert page.one("#lead-status input[name=seen]")["value"] == "lost"
    assert page.one("#status_note").get_text().strip() == "Called her"  # kept
    assert "Went elsewhere" in text_of(page, "#lead-timeline")


def test_won_is_offered_only_from_quoted_and_needs_a_note(staff, app):
    lead_id = add_lead(app, L.QUOTED)
    page = Page(staff.get(f"/staff/leads/{lead_id}"))
    assert {b["value"] for b in page.select("#lead-status button[name=to]")} == {
        "consultation",
        "won",
        "lost",
    }

    refused = move(staff, lead_id, "won", "quoted", htmx=True, note="  ")

    assert refused.status_code == 422
    assert field_error(refused, "status_note").startswith("Say how the deposit was paid")
    assert lead_state(app, lead_id) == (L.QUOTED, [])

    done = move(staff, lead_id, "won", "quoted", htmx=True, note="Paid by bank transfer")
    assert done.status_code == 200
    assert lead_state(app, lead_id)[0] is L.WON
    assert not Page(done).select("#lead-status button[name=to]")


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_note_is_added_to_the_timeline_and_shown_as_text(staff, app, htmx):
    lead_id = add_lead(app)
    staff.get(f"/staff/leads/{lead_id}")
    typed = "Her sister's ring:\r\n<script>alert('x')</script> & co."

    if htmx:
        response = staff.htmx("POST", f"/staff/leads/{lead_id}/notes", data={"note": typed})
        assert response.status_code == 200
        page = Page(response)
        assert page.one("#lead-note #note").get_text().strip() == ""
        assert page.one("#lead-timeline")["hx-swap-oob"] == "true"
    else:
        response = staff.post(
            f"/staff/leads/{lead_id}/notes", data={"csrf_token": staff.csrf_token, "note": typed}
        )
        assert response.status_code == 303
        assert response.location == f"/staff/leads/{lead_id}#lead-note"
        page = Page(staff.get(response.location))
    assert "Note added." in text_of(page, "#messages")
    [note] = page.select("#lead-timeline .staff-timeline__entry--note")
    expected = "Her sister's ring:\n<script>alert('x')</script> & co."
    assert note.select_one(".staff-timeline__text").get_text() == expected
    assert not note.select("script")
    assert text_of(note, ".staff-timeline__who") == STAFF_EMAIL
    status, events = lead_state(app, lead_id)
    assert (status, events) == (L.NEW, [(None, None, STAFF_EMAIL, staff_id(app), expected)])


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize(
    ("typed", "message"),
    [(" \r\n\t ", "Write the note first."), ("x" * 2001, "Keep a note to 2000 characters.")],
    ids=["empty", "too-long"],
)
def test_a_note_that_cant_be_kept_is_refused_and_what_was_typed_stays(
    staff, app, htmx, typed, message
):
    lead_id = add_lead(app)
    staff.get(f"/staff/leads/{lead_id}")

    if htmx:
        response = staff.htmx("POST", f"/staff/leads/{lead_id}/notes", data={"note": typed})
    else:
        response = staff.post(
            f"/staff/leads/{lead_id}/notes", data={"csrf_token": staff.csrf_token, "note": typed}
        )

    assert response.status_code == 422
    page = Page(response)
    assert field_error(page, "note") == message
    assert page.one("#note")["aria-invalid"] == "true"
    assert page.one("#note").get_text().removeprefix("\r\n") == typed
    assert lead_state(app, lead_id) == (L.NEW, [])


def test_assigning_a_lead_is_recorded_on_its_timeline(staff, app):
    lead_id = add_lead(app)
    keeper = staff_id(app)
    with app.app_context():
        shopper = create_user("shopper@example.com")
    staff.get(f"/staff/leads/{lead_id}")
    options = [
        o["value"] for o in Page(staff.get(f"/staff/leads/{lead_id}")).select("#lead-assign option")
    ]
    assert options == ["", str(keeper)]

    url = f"/staff/leads/{lead_id}/assignee"
    assigned = staff.htmx("POST", url, data={"assignee": keeper, "seen": ""})
    again = staff.htmx("POST", url, data={"assignee": keeper, "seen": keeper})
    refused = staff.htmx("POST", url, data={"assignee": str(shopper), "seen": keeper})
    odd = staff.htmx("POST", url, data={"assignee": "²", "seen": keeper})
    plain = staff.post(
        url, data={"csrf_token": staff.csrf_token, "assignee": "", "seen": str(keeper)}
    )

    assert assigned.status_code == 200
    page = Page(assigned)
    assert page.one("#lead-assign option[selected]")["value"] == str(keeper)
    assert "Assigned to Kit Keeper" in text_of(page, "#lead-timeline")
    assert again.status_code == 200
    assert refused.status_code == 422
    assert field_error(refused, "assignee") == "Choose a member of staff."
    assert odd.status_code == 422
    assert plain.status_code == 303
    _, events = lead_state(app, lead_id)
    assert [(actor, note) for _, _, actor, _, note in events] == [
        (STAFF_EMAIL, f"Assigned to Kit Keeper ({STAFF_EMAIL})"),
        (STAFF_EMAIL, "Unassigned"),
    ]


def test_two_of_the_staff_assigning_at_once_never_undo_each_other_silently(staff, app):
    """Both pages showed the commission with nobody; one gave it to Kit, the other (a moment
    later, from the page as it was) to nobody else: the last silently won, and nobody knew
    Kit's choice was undone. The second form now says who has it, and changes nothing."""
    lead_id = add_lead(app)
    keeper = staff_id(app)
    page = Page(staff.get(f"/staff/leads/{lead_id}"))
    fields = form_fields(page, "#lead-assign")
    assert fields["seen"] == ""
    url = f"/staff/leads/{lead_id}/assignee"

    first = staff.post(url, data={**fields, "assignee": str(keeper)})
    second = staff.post(url, data={**fields, "assignee": ""})  # the other page, as drawn

    assert first.status_code == 303
    assert second.status_code == 409
    assert "it is now Kit Keeper" in page_text(second)
    _, events = lead_state(app, lead_id)
    assert [note for *_, note in events] == [f"Assigned to Kit Keeper ({STAFF_EMAIL})"]
    without = {name: value for name, value in fields.items() if name != "seen"}
    assert staff.post(url, data={**without, "assignee": ""}).status_code == 409


def test_every_action_needs_the_csrf_token_and_an_existing_lead(staff, app):
    lead_id = add_lead(app)
    for action, data in (
        ("status", {"to": "contacted", "seen": "new"}),
        ("assignee", {"assignee": ""}),
        ("notes", {"note": "No token"}),
    ):
        refused = staff.post(f"/staff/leads/{lead_id}/{action}", data=data)
        assert refused.status_code == 400, action
        staff.get(f"/staff/leads/{lead_id}")
        missing = staff.post(
            f"/staff/leads/999999/{action}", data={"csrf_token": staff.csrf_token, **data}
        )
        assert missing.status_code == 404, action
    assert lead_state(app, lead_id) == (L.NEW, [])


# Costs and access


def test_the_list_and_a_lead_cost_the_same_queries_for_3_leads_or_30(staff, app, queries):
    first = add_lead(app, assigned_to_id=staff_id(app))
    add_lead(app)
    add_lead(app, L.LOST)
    staff.get(f"/staff/leads/{first}")

    def visit() -> None:
        staff.get("/staff/leads?tab=all")
        staff.htmx("GET", "/staff/leads?tab=all&q=grace&assignee=me")
        staff.get(f"/staff/leads/{first}")

    with queries() as few:
        visit()
    for n in range(27):
        add_lead(app, (L.NEW, L.CONTACTED, L.QUOTED)[n % 3], assigned_to_id=staff_id(app))
    for n in range(6):
        staff.post(
            f"/staff/leads/{first}/notes", data={"csrf_token": staff.csrf_token, "note": f"{n}"}
        )
    with queries() as many:
        visit()

    assert len(many) == len(few)


def test_leads_are_for_staff_with_the_second_factor_only(app, client):
    lead_id = add_lead(app)
    urls = ["/staff/leads", f"/staff/leads/{lead_id}"]
    for url in urls:
        guest = client.get(url)
        assert guest.status_code in (302, 303)
        assert "/auth/login" in guest.location
    with app.app_context():
        create_user("shopper@example.com")
    client.submit("/auth/login", {"email": "shopper@example.com", "password": PASSWORD})
    for url in urls:
        assert client.get(url).status_code == 404
    client.get("/cart")
    posted = client.post(
        f"/staff/leads/{lead_id}/status",
        data={"csrf_token": client.csrf_token, "to": "lost", "seen": "new"},
    )
    assert posted.status_code == 404
    _, secret = create_staff(app)
    keeper = app.test_client()
    signed_in = keeper.submit("/auth/login", {"email": STAFF_EMAIL, "password": PASSWORD})
    assert signed_in.status_code == 303
    for url in urls:
        before = keeper.get(url)
        assert before.status_code == 303
        assert before.location.startswith(SECOND_FACTOR)
    passed = keeper.submit(SECOND_FACTOR, {"code": unused_code(app, secret)})
    assert passed.status_code in {200, 303}
    assert keeper.get(urls[1]).status_code == 200
    assert lead_state(app, lead_id) == (L.NEW, [])


# The dashboard


def test_the_dashboard_shows_new_commissions_and_the_newest_few(staff, app):
    start = datetime(2026, 11, 1, tzinfo=UTC)
    made = [
        add_lead(app, name=f"Shopper {n}", category="Ring", created_at=start + timedelta(hours=n))
        for n in range(7)
    ]
    add_lead(app, L.CONTACTED, name="Answered")

    page = Page(staff.get("/staff"))

    card = page.one("#dashboard-leads")
    assert text_of(card, ".dashboard-card__title") == "New commissions"
    assert text_of(card, ".dashboard-card__figure") == "7"
    title = card.select_one(".dashboard-card__title a")
    assert title["href"] == "/staff/leads?tab=new"
    newest = [a["href"] for a in card.select(".dashboard-leads a")]
    assert newest == [f"/staff/leads/{n}" for n in reversed(made)][:5]
    assert "Shopper 6" in text_of(card, ".dashboard-leads")
    assert "Answered" not in text_of(card)
    assert len(references(staff.get(title["href"]))) == 7


def test_a_note_sent_with_a_key_the_shop_never_drew_keeps_its_words(staff, app):
    lead_id = add_lead(app)
    fields = form_fields(Page(staff.get(f"/staff/leads/{lead_id}")), "#lead-note")
    data = {**fields, "request_key": "not one of ours!", "note": "Called her back at six"}

    refused = staff.post(f"/staff/leads/{lead_id}/notes", data=data)

    assert refused.status_code == 422
    assert "This form had expired: nothing was saved." in page_text(refused)
    again = form_fields(Page(refused), "#lead-note")
    assert again["note"] == "Called her back at six"
    assert lead_state(app, lead_id) == (L.NEW, [])
    # Sent again as shown, it is the note.
    assert staff.post(f"/staff/leads/{lead_id}/notes", data=again).status_code == 303
    _, events = lead_state(app, lead_id)
    assert [note for *_, note in events] == ["Called her back at six"]


@pytest.mark.parametrize("when", ["again", "at_once"])
def test_the_same_note_form_sent_twice_is_one_note(staff, app, when):
    """Sent twice (a double click without JavaScript, or again when its answer was lost), a
    note was on the timeline twice (found by review)."""
    if when == "at_once" and not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: the second can't wait on the first")
    lead_id = add_lead(app)
    fields = form_fields(Page(staff.get(f"/staff/leads/{lead_id}")), "#lead-note")
    url, data = f"/staff/leads/{lead_id}/notes", {**fields, "note": "Called her back"}
    answers = []

    def send() -> None:
        answers.append(staff.post(url, data=data).status_code)

    if when == "again":
        send()
        send()
    else:
        # The other window's note goes in as this one is about to take the commission.
        taking = lambda sql: "FOR UPDATE" in sql  # noqa: E731
        with meanwhile(app, taking, lambda: in_another_window(send)) as ran:
            send()
        assert ran

    assert answers == [303, 303]
    _, events = lead_state(app, lead_id)
    assert [note for *_, note in events].count("Called her back") == 1
    fresh = form_fields(Page(staff.get(f"/staff/leads/{lead_id}")), "#lead-note")
    assert fresh["request_key"] != fields["request_key"]  # the next note is a note of its own


def test_staff_read_a_commissions_choices_as_the_shopper_chose_them(app: Flask) -> None:
    """The commission's page and list showed the codes the form stores ("ring",
    "white-gold", "2500-5000") where the shopper's pages and emails say "A ring", "18k white
    gold", "£2,500 to £5,000" (found by the outside review)."""
    lead_id = add_lead(app, category="ring", preferred_metal="white-gold", budget="2500-5000")
    staff = staff_client(app)
    page = Page(staff.get(f"/staff/leads/{lead_id}"))
    listed = Page(staff.get("/staff/leads?tab=all"))

    assert text_of(page.one(".lead-request__piece")) == "A ring"
    assert text_of(page.one(".lead-request__metal")) == "18k white gold"
    assert text_of(page.one(".lead-request__budget")) == "£2,500 to £5,000"
    assert text_of(listed.one(f"#lead-{lead_id} .lead-row__piece")) == "A ring"
    assert text_of(listed.one(f"#lead-{lead_id} .lead-row__budget")) == "£2,500 to £5,000"
