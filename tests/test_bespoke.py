"""Bespoke requests, the shopper's side: the form and its rules (checked field by field with
htmx and again on submit), the lead and its two emails saved in one unit of work (the email
provider down changes nothing for the shopper), the abuse guards, the thank-you page, and the
shopper's commissions under /account."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from flask import Flask
from sqlalchemy import func, select, update

from elysium.extensions import db
from elysium.models import OutboxEmail, OutboxStatus
from elysium.models.engagement import BespokeLead, LeadEvent, LeadStatus
from elysium.models.types import utcnow
from elysium.services import bespoke
from tests.conftest import PASSWORD, ShopClient, create_user, make_app, page_text, sent_emails
from tests.html import Page, elements, field_error, form_fields, text_of
from tests.support.resend_server import running_fake_resend

RING = "aurelia-solitaire-ring"
# As a browser sends a text area: each line break is CRLF, kept as one character.
IDEA = "A ring for our tenth anniversary,\r\nwith the old stone from my grandmother's brooch."
IDEA_KEPT = IDEA.replace("\r\n", "\n")
VALID = {
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "phone": "+44 20 7946 0000",
    "piece_type": "ring",
    "metal": "platinum",
    "budget": "5000-10000",
    "wanted_by": "",
    "message": IDEA,
    "consent": "y",
}
TEXT_FIELDS = ("name", "email", "phone", "wanted_by", "message")
HOSTILE = '<script>alert("x")</script> & <b>bold</b> "quoted"'


def started_ago(app: Flask, seconds: float) -> str:
    """The signed start time a form drawn ``seconds`` ago carries."""
    with app.app_context():
        return bespoke.fill_token(time.time() - seconds)


def open_form(client: ShopClient, url: str = "/bespoke") -> Page:
    response = client.get(url)
    assert response.status_code == 200
    return Page(response)


def send(client: ShopClient, app: Flask, url: str = "/bespoke", *, patient: bool = True, **changes):
    """Open the form, fill it in as a shopper would, and send it (by default as if the shopper
    took ten seconds over it). A change of ``None`` leaves the field out."""
    environ = changes.pop("environ", {})
    fields = form_fields(open_form(client, url), "#bespoke-form")
    fields.update(VALID)
    if patient:
        fields["started"] = started_ago(app, 10)
    fields.update(changes)
    data = {name: value for name, value in fields.items() if value is not None}
    return client.post("/bespoke", data=data, environ_overrides=environ)


def leads(app: Flask) -> list[BespokeLead]:
    with app.app_context():
        found = db.session.scalars(select(BespokeLead).order_by(BespokeLead.id)).all()
        for lead in found:
            _ = lead.events, lead.product
        db.session.expunge_all()
        return list(found)


def nothing_saved(app: Flask) -> None:
    assert leads(app) == []
    assert sent_emails(app) == []
    with app.app_context():
        assert db.session.scalar(select(func.count(LeadEvent.id))) == 0


def kept(page: Page, sent: dict[str, str]) -> None:
    """Everything typed is in the form again, as typed."""
    fields = form_fields(page, "#bespoke-form")
    for name in TEXT_FIELDS:
        typed = sent.get(name) or ""
        shown = fields.get(name, "")
        if name == "message":  # a browser drops the newline that opens a <textarea>
            shown = shown.removeprefix("\r\n").removeprefix("\n")
        assert shown.replace("\r\n", "\n") == typed.replace("\r\n", "\n"), name
    for name in ("piece_type", "metal", "budget"):
        offered = [option.get("value") for option in elements(page, f"#bespoke-{name} option")]
        if sent.get(name, "") in offered:  # a value the list doesn't offer can't be shown
            assert fields.get(name, "") == sent.get(name, ""), name
    assert ("consent" in fields) == bool(sent.get("consent"))


# The page and its links


def test_the_form_asks_for_everything_in_the_shops_voice(client, catalogue):
    page = open_form(client)
    assert text_of(page, "h1") == "Make it yours"
    fields = form_fields(page, "#bespoke-form")
    assert {"name", "email", "phone", "piece_type", "metal", "budget", "wanted_by"} <= set(fields)
    assert {"message", "started", "piece", "homepage", "csrf_token"} <= set(fields)
    assert fields["piece"] == ""
    assert elements(page, ".bespoke__piece") == []
    piece_types = [text_of(o) for o in elements(page, "#bespoke-piece_type option")]
    assert piece_types[1:] == [
        "A ring",
        "A necklace or pendant",
        "Earrings",
        "A bracelet",
        "Something else",
    ]
    metals = [o["value"] for o in elements(page, "#bespoke-metal option")]
    assert metals == ["yellow-gold", "white-gold", "rose-gold", "platinum", "not-sure"]
    assert fields["metal"] == "not-sure"
    assert len(elements(page, "#bespoke-budget option")) >= 5
    assert page.one("#bespoke-wanted_by")["type"] == "date"
    assert page.one("#bespoke-consent")["type"] == "checkbox"
    honeypot = page.one("#bespoke-homepage")
    assert honeypot["tabindex"] == "-1"
    assert honeypot["autocomplete"] == "off"
    assert honeypot.find_parent(attrs={"aria-hidden": "true"}) is not None


def test_arriving_from_a_piece_shows_it_and_carries_it(client, catalogue):
    url = f"/bespoke?from={RING}&metal=platinum&diamond=0.50ct"
    page = open_form(client, url)
    art = page.one(".bespoke__piece img")
    assert urlsplit(art["src"]).path == f"/art/{RING}/platinum/0.50ct.svg"
    assert "platinum" in art["alt"]
    assert text_of(page, "#bespoke-piece-summary") == "Platinum with 0.50 ct, G colour, VS1"
    fields = form_fields(page, "#bespoke-form")
    assert parse_qs(fields["piece"]) == {
        "from": [RING],
        "metal": ["platinum"],
        "diamond": ["0.50ct"],
    }
    assert fields["use_piece"] == "y"
    assert fields["piece_type"] == "ring"
    assert fields["metal"] == "platinum"


@pytest.mark.parametrize(
    "query",
    [
        "from=no-such-piece",
        f"from={RING}&metal=unobtainium",
        f"from={RING}&diamond=9.99ct",
        "from=../../etc/passwd",
        "from=",
        "metal=platinum",
    ],
)
def test_an_unknown_piece_or_configuration_is_ignored(client, catalogue, query):
    page = open_form(client, f"/bespoke?{query}")
    assert elements(page, ".bespoke__piece") == []
    assert form_fields(page, "#bespoke-form")["piece"] == ""


@pytest.mark.parametrize(
    "forged",
    ["from=no-such-piece&metal=platinum", f"from={RING}&metal=gold", "&".join(["a=1"] * 50)],
)
def test_a_forged_piece_in_the_hidden_field_is_ignored(client, app, catalogue, forged):
    response = send(client, app, piece=forged)
    assert response.status_code == 303
    [lead] = leads(app)
    assert lead.product_id is None
    assert lead.configuration == {}


def test_the_header_the_footer_and_every_product_page_lead_to_bespoke(client, catalogue):
    home = Page(client.get("/"))
    header = [a["href"] for a in elements(home, ".header-actions a")]
    assert "/bespoke" in header
    assert "/bespoke" in [a["href"] for a in elements(home, ".site-footer a")]

    product = Page(client.get(f"/shop/{RING}?metal=rose-gold&diamond=1.00ct"))
    link = product.one("#make-it-yours a")
    assert text_of(link) == "Make it yours"
    target = urlsplit(link["href"])
    assert target.path == "/bespoke"
    assert parse_qs(target.query) == {"from": [RING], "metal": ["rose-gold"], "diamond": ["1.00ct"]}

    # A choice changed with htmx: the link follows it (out of band with the price).
    fragment = Page(client.htmx("GET", f"/shop/{RING}/price?metal=white-gold&diamond=0.50ct"))
    moved = fragment.one("#make-it-yours")
    assert moved["hx-swap-oob"] == "true"
    assert parse_qs(urlsplit(moved.find("a")["href"]).query)["metal"] == ["white-gold"]

    started = open_form(client, link["href"])
    assert text_of(started, ".bespoke__piece-name") == "Aurelia Solitaire Ring"


# Saving a request


def test_a_phone_number_typed_in_arabic_indic_digits_is_kept_as_the_house_can_dial_it(
    client, app, catalogue
):
    arabic = "+966 \u0665\u0660 \u0661\u0662\u0663 \u0664\u0665\u0666\u0667"
    assert send(client, app, phone=arabic).status_code == 303
    [lead] = leads(app)
    assert lead.phone == "+966 50 123 4567"


def test_a_request_saves_one_lead_its_first_timeline_line_and_two_emails(client, app, catalogue):
    response = send(
        client,
        app,
        f"/bespoke?from={RING}&metal=platinum&diamond=0.50ct",
        name="  Ada Lovelace  ",
        wanted_by=(utcnow().date() + timedelta(days=90)).isoformat(),
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/bespoke/thanks"

    [lead] = leads(app)
    assert lead.status is LeadStatus.NEW
    assert (lead.name, lead.email, lead.phone) == (
        "Ada Lovelace",
        "ada@example.com",
        VALID["phone"],
    )
    assert (lead.category, lead.preferred_metal, lead.budget) == ("ring", "platinum", "5000-10000")
    assert lead.message == IDEA_KEPT
    assert lead.wanted_by == utcnow().date() + timedelta(days=90)
    assert lead.product.slug == RING
    assert lead.configuration == {"metal": "platinum", "diamond": "0.50ct"}
    assert lead.contact_consent is True
    assert lead.user_id is None
    [event] = lead.events
    assert (event.actor, event.note, event.from_status, event.to_status) == (
        "shopper",
        "Request received",
        None,
        None,
    )

    emails = sent_emails(app)
    assert sorted(email.to_address for email in emails) == sorted(
        ["ada@example.com", app.config["BESPOKE_NOTIFY_EMAIL"]]
    )
    assert all(lead.reference in email.subject for email in emails)
    assert all(email.status is OutboxStatus.PENDING for email in emails)
    [ack] = sent_emails(app, "ada@example.com")
    assert "Aurelia Solitaire Ring" in ack.body_text
    assert lead.reference in ack.body_text
    # What was asked and the piece it starts from are lines of their own, in both emails
    # (they ran together: "£10,000Starting from"; found by review).
    for email in emails:
        assert "\nStarting from Aurelia Solitaire Ring" in email.body_text, email.body_text
    # Nobody proved the address is theirs: what they typed is not sent to it.
    for body in (ack.body_text, ack.body_html):
        assert "grandmother" not in body
        assert "Ada" not in body

    thanks = client.get("/bespoke/thanks")
    assert thanks.status_code == 200
    assert text_of(Page(thanks), "#bespoke-reference") == lead.reference


def test_a_guest_request_goes_with_the_account_of_its_address_when_it_closes(
    client, app, catalogue, auth
):
    """Asked as a guest under "Ada@Example.com", the request is Ada's: her account's export
    lists it, and closing her account erases it with the emails about it (the house's
    notification quotes all of it). Before, the address was kept as typed and compared with
    the account's in lower case, so the request, its emails and its payable quote stayed;
    and even a request asked signed in left the house's notification behind."""
    assert send(client, app, email="Ada@Example.com").status_code == 303
    auth.create_user("ada@example.com")
    auth.login("ada@example.com")

    export = client.get("/account/export").get_json()
    closed = client.submit("/account/delete", {"password": PASSWORD})

    assert [commission["message"] for commission in export["commissions"]] == [IDEA_KEPT]
    assert closed.status_code == 303
    [lead] = leads(app)
    assert (lead.name, lead.email, lead.phone, lead.status) == ("", "", "", LeadStatus.LOST)
    with app.app_context():
        kept = [f"{e.to_address} {e.body_text}" for e in db.session.scalars(select(OutboxEmail))]
        db.session.remove()
    assert [text for text in kept if "Ada Lovelace" in text or "7946" in text] == []


def test_a_guest_request_to_the_form_of_a_persons_second_account_is_that_accounts(
    client, app, catalogue, auth
):
    """One person's two accounts, "zoë" typed two ways (migration 0029 leaves both). A
    request sent in the second account's form is that account's, not the other's."""
    combining, composed = "zoe\u0308@example.com", "zo\u00eb@example.com"
    auth.create_user(combining)
    auth.create_user(composed)

    assert send(client, app, email=combining.upper()).status_code == 303

    [lead] = leads(app)
    assert lead.email == combining
    auth.login(combining)
    export = client.get("/account/export").get_json()
    assert [commission["message"] for commission in export["commissions"]] == [IDEA_KEPT]


def test_the_lead_and_its_emails_are_one_unit_of_work(client, app, catalogue, monkeypatch):
    """If the second email can't be queued, neither the lead nor the first email is kept."""
    monkeypatch.setitem(app.config, "BESPOKE_NOTIFY_EMAIL", "not an address")
    with pytest.raises(ValueError, match="not an email address"):
        send(client, app)
    nothing_saved(app)


def test_the_notification_goes_to_the_configured_address(client, app, catalogue, monkeypatch):
    monkeypatch.setitem(app.config, "BESPOKE_NOTIFY_EMAIL", "commissions@elysium.example")
    assert send(client, app).status_code == 303
    assert len(sent_emails(app, "commissions@elysium.example")) == 1


def test_leaving_the_starting_piece_out(client, app, catalogue):
    response = send(client, app, f"/bespoke?from={RING}", use_piece=None)
    assert response.status_code == 303
    [lead] = leads(app)
    assert lead.product_id is None
    assert lead.configuration == {}


@pytest.fixture
def resend_shop(app: Flask) -> Iterator[tuple[Flask, object]]:
    with running_fake_resend() as fake:
        shop = make_app(
            app.config["SQLALCHEMY_DATABASE_URI"],
            EMAIL_BACKEND="resend",
            RESEND_BASE_URL=fake.url,
            RESEND_API_KEY=fake.api_key,
            EMAIL_TIMEOUT_SECONDS=1,
        )
        yield shop, fake
        with shop.app_context():
            db.engine.dispose()


def _form_to_send(client: ShopClient) -> dict[str, str]:
    """The form opened and filled in, ready to send, with its own start token."""
    return {**form_fields(open_form(client), "#bespoke-form"), **VALID}


@pytest.fixture
def no_time_asked(app: Flask, monkeypatch) -> None:
    """These tests are not about how long the shopper took: the shop asks for no time."""
    monkeypatch.setitem(app.config, "BESPOKE_MIN_FILL_SECONDS", 0)


@pytest.mark.parametrize("when", ["again", "at_once"])
def test_the_same_form_sent_twice_is_one_request(
    client, app: Flask, catalogue, no_time_asked, when: str
):
    """A double click, or the form sent again when its answer was lost: two requests, two
    references, four emails. The form's own nonce (in its signed start token) is kept on the
    request once; sent again, or at the same moment, the shopper is thanked for the first."""
    from tests.support.meanwhile import in_another_window, meanwhile

    data = _form_to_send(client)
    other_tab = app.test_client()
    other_tab.set_cookie(
        app.config["SESSION_COOKIE_NAME"],
        client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value,
    )
    answers = []

    def send_it(browser) -> None:
        answers.append(browser.post("/bespoke", data=data))

    if when == "again":
        send_it(client)
        send_it(client)
    else:
        with meanwhile(
            app, "INSERT INTO bespoke_leads", lambda: in_another_window(lambda: send_it(other_tab))
        ) as raced:
            send_it(client)
        assert raced

    assert [answer.status_code for answer in answers] == [303, 303]
    [lead] = leads(app)
    assert len(sent_emails(app)) == 2  # the acknowledgement and the house's, once each
    assert text_of(Page(client.get("/bespoke/thanks")), "#bespoke-reference") == lead.reference


def test_each_form_drawn_is_a_request_of_its_own(client, app: Flask, catalogue, no_time_asked):
    """Two enquiries from one browser, each from the form opened afresh, are two requests."""
    assert client.post("/bespoke", data=_form_to_send(client)).status_code == 303
    assert client.post("/bespoke", data=_form_to_send(client)).status_code == 303
    assert len(leads(app)) == 2


def test_with_the_email_provider_down_the_request_is_saved_and_the_emails_go_later(
    app, catalogue, resend_shop
):
    shop, fake = resend_shop
    fake.fail_with(503, "application_error")
    client = shop.test_client()
    response = send(client, shop)
    assert response.status_code == 303
    assert fake.requests == [], "no request talks to the provider"
    assert len(leads(app)) == 1
    assert text_of(Page(client.get("/bespoke/thanks")), "#bespoke-reference") == "B00001"

    runner = shop.test_cli_runner()
    assert runner.invoke(args=["emails", "send-pending"]).exit_code == 0
    emails = sent_emails(app)
    assert [email.status for email in emails] == [OutboxStatus.PENDING] * 2
    assert all(email.attempts == 1 for email in emails)

    fake.succeed()
    with shop.app_context():
        db.session.execute(
            update(OutboxEmail).values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    assert runner.invoke(args=["emails", "send-pending"]).exit_code == 0
    assert [email.status for email in sent_emails(app)] == [OutboxStatus.SENT] * 2
    assert fake.emails_sent == 2


# The rules, on submit (no JavaScript) and field by field (htmx)

LONG = "x" * (bespoke.MESSAGE_MAX_LENGTH + 1)


def _rules() -> list:
    today = bespoke.today()
    return [
        ("name", "", "Please tell us your name."),
        ("name", "   ", "Please tell us your name."),
        ("name", "Ada\r\nBcc: everyone@example.com", "Please keep your name on one line."),
        ("name", "Ada\nLovelace", "Please keep your name on one line."),
        # What staff would read as something else, or as nothing (found by review).
        ("name", "Ada\x85Lovelace", "Your name has a character we can't use."),
        ("name", "Ada \u202eecalevoL", "Your name has a character we can't use."),
        ("name", "\u200b", "Please tell us your name."),
        ("email", "", "Please give us an email address, so we can write back."),
        ("email", "ada at example", "Enter an email address like name@example.com."),
        (
            "email",
            "ada@example.com\r\nBcc: x@example.com",
            "Please keep your email address on one line.",
        ),
        (
            "phone",
            "call me maybe",
            "Enter a phone number with digits, spaces and + only, or leave it empty.",
        ),
        ("piece_type", "", "Choose the kind of piece you have in mind."),
        ("piece_type", "tiara", "Choose the kind of piece you have in mind."),
        ("metal", "silver", "Choose a metal, or “Not sure yet”."),
        ("budget", "", "Choose a budget, or let us talk it through."),
        ("budget", "a million", "Choose a budget, or let us talk it through."),
        (
            "wanted_by",
            (today - timedelta(days=1)).isoformat(),
            "That date has passed: choose a day from today on.",
        ),
        (
            "wanted_by",
            (bespoke.latest_wanted_by(today) + timedelta(days=1)).isoformat(),
            "We plan commissions up to two years ahead: choose an earlier date.",
        ),
        ("wanted_by", "next spring", "Enter a date like 2027-06-21, or leave it empty."),
        ("wanted_by", "2027-02-30", "Enter a date like 2027-06-21, or leave it empty."),
        ("message", "", "Please tell us about the piece you imagine."),
        ("message", " \r\n ", "Please tell us about the piece you imagine."),
        ("message", "\u200b\u200d", "Please tell us about the piece you imagine."),
        (
            "message",
            LONG,
            "Please keep this under 4,000 characters (it is 4,001); we can talk through the rest.",
        ),
        ("consent", None, "Please let us contact you about your request, or we can't reply."),
    ]


RULES = _rules()


@pytest.mark.parametrize(("name", "value", "message"), RULES)
def test_each_rule_refuses_the_request_and_keeps_what_was_typed(
    client, app, catalogue, name, value, message
):
    response = send(client, app, **{name: value})
    assert response.status_code == 422
    page = Page(response)
    assert field_error(page, f"bespoke-{name}") == message
    assert page.one(f"#bespoke-{name}")["aria-invalid"] == "true"
    sent = {**VALID, name: value}
    if name not in ("name", "email") or "\n" not in (value or ""):
        kept(page, sent)
    nothing_saved(app)


def test_every_message_shows_at_once(client, app, catalogue):
    response = send(client, app, name="", email="nope", budget="", consent=None)
    assert response.status_code == 422
    page = Page(response)
    for name in ("name", "email", "budget", "consent"):
        assert field_error(page, f"bespoke-{name}"), name
    assert field_error(page, "bespoke-message") == ""


def test_the_edges_of_the_rules_are_accepted(client, app, catalogue):
    today = bespoke.today()
    for wanted, message in (
        (today.isoformat(), "x" * bespoke.MESSAGE_MAX_LENGTH),
        (bespoke.latest_wanted_by(today).isoformat(), "short"),
    ):
        response = send(client, app, wanted_by=wanted, message=message, phone="")
        assert response.status_code == 303
    assert [lead.message for lead in leads(app)] == ["x" * bespoke.MESSAGE_MAX_LENGTH, "short"]


def test_a_message_of_the_longest_length_as_typed_is_taken_whatever_its_line_breaks(
    client, app, catalogue
):
    """A browser sends each line break as two characters: a message one short of the limit as
    typed, on many lines, was refused as far over it."""
    lines = ["abc"] * (bespoke.MESSAGE_MAX_LENGTH // 4)
    typed = "\n".join(lines)
    assert len(typed) < bespoke.MESSAGE_MAX_LENGTH < len("\r\n".join(lines))

    response = send(client, app, message="\r\n".join(lines))

    assert response.status_code == 303
    assert [lead.message for lead in leads(app)] == [typed]


def test_the_address_anyone_types_is_sent_no_words_of_theirs_and_the_account_its_own(
    app, client, auth, catalogue
):
    """The form sends the house's email to the address typed: a stranger's name and message
    (a phishing text, say) must not travel in it. A signed-in shopper writing from her own
    address reads her request back."""
    lure = "Your account is suspended: verify your card at https://elysium-verify.example"
    assert send(client, app, name=lure, email="victim@example.org", message=lure).status_code == 303
    [stranger] = sent_emails(app, "victim@example.org")
    for body in (stranger.body_text, stranger.body_html):
        assert "verify" not in body
        assert "Hello," in body

    auth.create_user(first_name="Ada", last_name="Lovelace")
    auth.login()
    assert send(client, app, message=IDEA).status_code == 303
    [own] = sent_emails(app, "ada@example.com")
    assert "Dear Ada Lovelace," in own.body_text
    assert IDEA_KEPT in own.body_text
    # Signed in, but asking for an answer at another address: nothing of hers goes there.
    assert send(client, app, email="friend@example.org", message=lure).status_code == 303
    [other] = sent_emails(app, "friend@example.org")
    assert "verify" not in other.body_text


@pytest.mark.parametrize(("name", "value", "message"), RULES)
def test_a_field_checked_as_the_shopper_leaves_it_answers_with_its_message(
    client, app, catalogue, name, value, message
):
    client.get("/bespoke")
    data = {} if value is None else {name: value}
    response = client.htmx("POST", f"/bespoke/check?field={name}", data=data)
    assert response.status_code == 422
    [slot] = Page(response).top()
    assert slot["id"] == f"error-bespoke-{name}"
    assert text_of(slot) == message
    nothing_saved(app)


@pytest.mark.parametrize(
    "name",
    ["name", "email", "phone", "piece_type", "metal", "budget", "wanted_by", "message", "consent"],
)
def test_a_good_field_clears_its_message(client, catalogue, name):
    client.get("/bespoke")
    value = VALID[name] or bespoke.today().isoformat()
    response = client.htmx("POST", f"/bespoke/check?field={name}", data={name: value})
    assert response.status_code == 200
    [slot] = Page(response).top()
    assert slot["id"] == f"error-bespoke-{name}"
    assert text_of(slot) == ""


def test_the_field_check_knows_only_the_forms_fields_and_needs_the_token(client, catalogue):
    client.get("/bespoke")
    assert client.htmx("POST", "/bespoke/check?field=homepage", data={}).status_code == 404
    assert client.htmx("POST", "/bespoke/check", data={}).status_code == 404
    plain = client.post("/bespoke/check?field=name", data={"csrf_token": client.csrf_token})
    assert plain.status_code == 303
    assert plain.headers["Location"] == "/bespoke"
    stranger = ShopClient(client.application)
    assert (
        stranger.post("/bespoke/check?field=name", headers={"HX-Request": "true"}).status_code
        == 400
    )


def test_the_form_is_wired_to_check_each_field_as_the_shopper_leaves_it(client, catalogue):
    page = open_form(client)
    for name in (
        "name",
        "email",
        "phone",
        "piece_type",
        "metal",
        "budget",
        "wanted_by",
        "message",
        "consent",
    ):
        control = page.one(f"#bespoke-{name}")
        assert control["hx-post"] == f"/bespoke/check?field={name}"
        assert control["hx-trigger"] == "change"
        assert control["hx-target"] == f"#error-bespoke-{name}"
        assert control["hx-params"] == name
        assert f"error-bespoke-{name}" in control["aria-describedby"].split()


# Abuse


def test_the_honeypot_pretends_all_is_well_and_saves_nothing(client, app, catalogue):
    response = send(client, app, homepage="http://spam.example")
    assert response.status_code == 303
    assert response.headers["Location"] == "/bespoke/thanks"
    nothing_saved(app)
    thanks = client.get("/bespoke/thanks")
    assert thanks.status_code == 200
    assert elements(Page(thanks), "#bespoke-reference") == []


@pytest.mark.parametrize("started", ["fresh", "missing", "tampered", "future"])
def test_a_request_sent_too_fast_or_without_a_true_start_time_is_gently_refused(
    client, app, catalogue, started
):
    page = open_form(client)
    token = form_fields(page, "#bespoke-form")["started"]
    value = {
        "fresh": token,
        "missing": None,
        "tampered": token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "future": started_ago(app, -3600),
    }[started]
    response = send(client, app, patient=False, started=value)
    assert response.status_code == 422
    refused = Page(response)
    assert "please take a moment" in text_of(refused, ".notice--error")
    kept(refused, VALID)
    nothing_saved(app)
    # Once the shopper has taken their time, the same form goes through.
    fields = form_fields(refused, "#bespoke-form")
    if started == "fresh":
        assert fields["started"] == token, "the shopper's time so far still counts"
    else:
        with app.app_context():
            assert bespoke.fill_started(fields["started"]) <= time.time(), "a true time again"
    fields["started"] = started_ago(app, 5)
    assert client.post("/bespoke", data=fields).status_code == 303
    assert len(leads(app)) == 1


def test_five_requests_an_hour_from_one_address_then_a_429_that_keeps_the_input(
    client, app, catalogue
):
    here = {"REMOTE_ADDR": "203.0.113.7"}
    # Refusals while correcting a field don't count.
    assert send(client, app, name="", environ=here).status_code == 422
    for number in range(5):
        assert send(client, app, name=f"Ada {number}", environ=here).status_code == 303
    typed = {**VALID, "name": "Ada the sixth", "message": "Once more, <with feeling>"}
    response = send(client, app, environ=here, name=typed["name"], message=typed["message"])
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    page = Page(response)
    assert "Please send yours again in" in text_of(page, ".notice--error")
    kept(page, typed)
    assert len(leads(app)) == 5
    elsewhere = {"REMOTE_ADDR": "203.0.113.8"}
    assert send(client, app, environ=elsewhere).status_code == 303


def test_requests_sent_at_once_from_one_address_never_pass_the_limit(client, app, catalogue):
    """The limit was checked when a request came and counted after its answer: requests sent
    together all passed the check (twelve at once saved seven). Each now counts before it is
    saved: while one is being saved, six more from the same address let four through."""
    from tests.support.meanwhile import in_another_window, meanwhile

    here = {"REMOTE_ADDR": "203.0.113.9"}
    other = app.test_client()
    answers = []

    def six_more() -> None:
        answers.extend(
            send(other, app, name=f"Ada {n}", environ=here).status_code for n in range(6)
        )

    with meanwhile(app, "INSERT INTO bespoke_leads", lambda: in_another_window(six_more)) as ran:
        assert send(client, app, environ=here).status_code == 303

    assert ran
    assert sorted(answers) == [303] * 4 + [429] * 2
    assert len(leads(app)) == 5


def test_the_csrf_token_is_required(client, app, catalogue):
    fields = {**VALID, "started": started_ago(app, 10)}
    response = ShopClient(app).post("/bespoke", data=fields)
    assert response.status_code == 400
    nothing_saved(app)


def test_text_is_stored_as_typed_and_escaped_on_every_page_and_in_the_emails(
    app, client, auth, catalogue
):
    auth.create_user()
    auth.login()
    name = 'Ada <img src=x onerror="alert(1)">'
    assert send(client, app, name=name, message=HOSTILE).status_code == 303
    [lead] = leads(app)
    assert (lead.name, lead.message) == (name, HOSTILE)

    for url in ("/bespoke/thanks", "/account/commissions"):
        html = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in html, url
        assert "<b>bold</b>" not in html, url
        assert "&lt;script&gt;alert" in html, url
    thanks = Page(client.get("/bespoke/thanks"))
    assert text_of(thanks, ".bespoke__message") == HOSTILE

    for email in sent_emails(app):
        assert "<script>alert" not in email.body_html
        assert "<img src=x" not in email.body_html
        assert "&lt;script&gt;alert" in email.body_html
        assert HOSTILE in email.body_text
    [ack] = sent_emails(app, "ada@example.com")
    assert name not in ack.subject


def test_the_request_sent_is_shown_again_for_a_while_then_no_more(client, app, catalogue):
    """On a shared computer, the next person to open the thank-you page read the last
    request sent from it (name, email, the idea) for as long as the browser kept its session."""
    sent_at = datetime.now(UTC)
    assert send(client, app).status_code == 303
    # Another server, its clock a little behind, answers the next page.
    with time_machine.travel(sent_at - timedelta(seconds=2)):
        page = Page(client.get("/bespoke/thanks"))
        assert text_of(page, "#bespoke-reference") == "B00001"
    with time_machine.travel(sent_at + timedelta(minutes=14)):
        page = Page(client.get("/bespoke/thanks"))
        assert text_of(page, "#bespoke-reference") == "B00001"
    with time_machine.travel(sent_at + timedelta(minutes=16)):
        later = client.get("/bespoke/thanks")
        assert later.status_code == 303
        assert later.headers["Location"] == "/bespoke"
    # Gone from the session (its cookie is signed, not secret), whatever the clock says.
    with time_machine.travel(sent_at + timedelta(minutes=1)):
        assert client.get("/bespoke/thanks").status_code == 303


def test_the_reference_comes_from_the_session_never_the_address(client, app, catalogue):
    empty = client.get("/bespoke/thanks?reference=B04242&lead_id=1")
    assert empty.status_code == 303
    assert empty.headers["Location"] == "/bespoke"
    assert send(client, app).status_code == 303
    other = ShopClient(app)
    assert other.get("/bespoke/thanks").status_code == 303
    page = Page(client.get("/bespoke/thanks?reference=B04242"))
    assert text_of(page, "#bespoke-reference") == "B00001"
    assert "B04242" not in page.html


def test_a_guest_where_a_session_ended_elsewhere_sees_her_thank_you_page(
    app, client, auth, catalogue
):
    """Ada's session on a shared computer ends from her phone; Grace, a guest there, sends a
    request and was sent back to an empty form (and would send it again): her thank-you note
    in the session was taken for Ada's and cleared with the ended session (found by
    review)."""
    auth.create_user()
    auth.login()
    client.get("/account")
    phone = ShopClient(app)
    phone.submit("/auth/login", {"email": "ada@example.com", "password": PASSWORD})
    assert phone.submit("/account", {}, action="/auth/logout").status_code == 303

    assert send(client, app, email="grace@example.com", name="Grace Hopper").status_code == 303
    thanks = client.get("/bespoke/thanks")

    assert thanks.status_code == 200, thanks.headers.get("Location")
    assert "We have sent a copy to grace@example.com" in page_text(thanks)
    assert client.get("/account").status_code == 303


@pytest.mark.parametrize("on_her_phone", ["signed out", "new password"])
def test_a_request_sent_signed_in_is_not_shown_once_the_session_ended_on_another_device(
    app, client, auth, catalogue, on_her_phone
) -> None:
    """Ada, signed in on a shared computer, sends a request and walks away; from her phone she
    signs out (which ends every session, on every device) or sets a new password. The shared
    computer is a guest's now, yet its thank-you page showed her request for 15 minutes: her
    address, budget and idea (found by review)."""
    auth.create_user()
    auth.login()
    assert send(client, app).status_code == 303
    assert IDEA_KEPT in page_text(client.get("/bespoke/thanks"))

    phone = ShopClient(app)
    phone.submit("/auth/login", {"email": "ada@example.com", "password": PASSWORD})
    if on_her_phone == "signed out":
        assert phone.submit("/account", {}, action="/auth/logout").status_code == 303
    else:
        new = {"current_password": PASSWORD, "password": "a quiet walk by the river"}
        assert phone.submit("/account/profile", new, action="/account/password").status_code == 303

    thanks = client.get("/bespoke/thanks")
    assert thanks.status_code == 303
    assert thanks.headers["Location"] == "/bespoke"
    # As after signing out here: the browser is asked to forget the pages it keeps of hers.
    assert thanks.headers["Clear-Site-Data"] == '"cache"'
    form = page_text(client.get("/bespoke"))
    assert "ada@example.com" not in form
    assert IDEA_KEPT not in form
    assert client.get("/account").status_code == 303
    # The next person's own request is theirs to see.
    assert send(client, app, email="grace@example.com", name="Grace Hopper").status_code == 303
    assert "We have sent a copy to grace@example.com" in page_text(client.get("/bespoke/thanks"))


# The shopper's commissions


def test_a_signed_in_shopper_finds_the_form_filled_in_and_the_lead_on_her_account(
    app, client, auth, catalogue
):
    user_id = auth.create_user(first_name="Ada", last_name="Lovelace")
    with app.app_context():
        create_user("grace@example.com")
    auth.login()
    fields = form_fields(open_form(client), "#bespoke-form")
    assert (fields["name"], fields["email"]) == ("Ada Lovelace", "ada@example.com")
    assert send(client, app, message="Mine").status_code == 303

    grace = ShopClient(app)
    grace.submit("/auth/login", {"email": "grace@example.com", "password": PASSWORD})
    assert (
        send(grace, app, name="Grace Hopper", email="grace@example.com", message="Hers").status_code
        == 303
    )

    mine, hers = leads(app)
    assert mine.user_id == user_id
    assert hers.user_id != user_id
    page = Page(client.get("/account/commissions"))
    [row] = elements(page, ".commission-list__item")
    assert text_of(row, ".commission-list__reference") == mine.reference
    assert "A ring" in text_of(row)
    assert "New" in text_of(row)
    assert hers.reference not in page.html
    assert "Hers" not in page.html
    nav = [a["href"] for a in elements(page, ".account-nav a")]
    assert "/account/commissions" in nav
    assert page.one(".account-nav a[aria-current=page]")["href"] == "/account/commissions"

    exported = json.loads(client.get("/account/export").get_data(as_text=True))
    assert [c["reference"] for c in exported["commissions"]] == [mine.reference]
    assert exported["commissions"][0]["message"] == "Mine"
    assert exported["commissions"][0]["status"] == "new"


def test_commissions_need_a_signed_in_shopper(client, catalogue):
    response = client.get("/account/commissions")
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/auth/login"


def test_no_commissions_yet_invites_one(app, client, auth, catalogue):
    auth.create_user()
    auth.login()
    page = client.get("/account/commissions")
    assert page.status_code == 200
    assert "You haven't asked us to make anything yet." in page_text(page)
    assert page.headers["Cache-Control"] == "no-store"
