"""The address book: add, edit, delete and defaults, with and without htmx; nobody else's."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from elysium.countries import COUNTRIES, PostcodeError, normalise_postcode
from elysium.extensions import db
from elysium.models import Address, User
from tests.conftest import page_text
from tests.html import Page, elements
from tests.support.meanwhile import in_another_window, meanwhile

HOME = {
    "full_name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postcode": "sw1y4jh",
    "country": "GB",
}
STUDIO = {
    "full_name": "Ada Lovelace",
    "company": "Analytical Engines Ltd",
    "line1": "1 Infinite Loop",
    "city": "Cupertino",
    "region": "CA",
    "postcode": "95014",
    "country": "US",
}


@pytest.fixture
def signed_in(auth) -> int:
    user_id = auth.create_user()
    auth.login()
    return user_id


def add(client, fields: dict, **defaults: bool):
    data = dict(fields)
    for kind, chosen in defaults.items():
        if chosen:
            data[f"default_{kind}"] = "y"
    return client.submit("/account/addresses", data)


def rows(app, user_id: int | None = None) -> list[Address]:
    with app.app_context():
        statement = select(Address).order_by(Address.id)
        if user_id is not None:
            statement = statement.where(Address.user_id == user_id)
        found = list(db.session.scalars(statement))
        db.session.expunge_all()
        return found


def defaults(app, user_id: int) -> tuple[list[int], list[int]]:
    found = rows(app, user_id)
    return (
        [a.id for a in found if a.is_default_shipping],
        [a.id for a in found if a.is_default_billing],
    )


def test_adding_an_address_without_javascript_redirects_back_to_the_list(app, client, signed_in):
    response = add(client, HOME, shipping=True, billing=True)
    assert response.status_code == 303
    assert response.headers["Location"] == "/account/addresses"
    page = page_text(client.get("/account/addresses"))
    assert "Address added." in page
    assert "12 St James's Square" in page
    assert "SW1Y 4JH" in page
    assert "United Kingdom" in page
    [address] = rows(app, signed_in)
    assert address.postcode == "SW1Y 4JH"
    assert address.is_default_shipping
    assert address.is_default_billing


def test_the_first_address_is_offered_as_the_default(client, signed_in):
    page = page_text(client.get("/account/addresses"))
    assert "You have no saved addresses yet." in page
    assert page.count(" checked") == 2
    add(client, HOME)
    assert " checked" not in page_text(client.get("/account/addresses"))


def test_adding_an_address_with_htmx_returns_a_fresh_form_and_the_new_card(app, client, signed_in):
    client.get("/account/addresses")
    response = client.htmx("POST", "/account/addresses", data=HOME)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "HX-Request" in response.headers["Vary"]
    body = page_text(response)
    assert "<html" not in body
    [address] = rows(app, signed_in)
    assert 'id="address-form"' in body
    assert 'hx-swap-oob="beforeend:#address-list"' in body
    assert f'id="address-{address.id}"' in body
    assert "Address added." in body
    assert 'value="12 St James' not in body, "the add form starts empty again"


def test_the_same_address_sent_twice_is_kept_once(app, client, signed_in):
    """A double click on "Add address", or Back and send again, kept the address twice
    (found by review). The second send finds it in the book, and makes it the default if
    asked; with htmx its card is redrawn where it is, not listed again."""
    assert add(client, HOME).status_code == 303
    again = add(client, {**HOME, "city": " London "}, shipping=True)

    assert again.status_code == 303
    assert "That address is already in your address book." in page_text(
        client.get("/account/addresses")
    )
    [address] = rows(app, signed_in)
    assert address.is_default_shipping
    client.get("/account/addresses")
    drawn = client.htmx("POST", "/account/addresses", data=HOME)
    assert drawn.status_code == 200
    assert "That address is already in your address book." in page_text(drawn)
    assert f'id="address-{address.id}"' not in page_text(drawn)  # not listed again
    drawn = client.htmx("POST", "/account/addresses", data={**HOME, "default_billing": "y"})
    assert "beforeend:#address-list" not in page_text(drawn)
    [card] = Page(drawn).select(f"#address-{address.id}")
    assert card["hx-swap-oob"] == "true"
    assert "Default billing" in card.get_text()
    # A default it is already: nothing to redraw (an edit of it open there stays as it is).
    drawn = client.htmx("POST", "/account/addresses", data={**HOME, "default_billing": "y"})
    assert f'id="address-{address.id}"' not in page_text(drawn)
    assert len(rows(app, signed_in)) == 1
    assert add(client, {**HOME, "line2": "Flat 3"}).status_code == 303
    assert len(rows(app, signed_in)) == 2  # another address is another


def test_required_fields_are_enforced_and_what_was_typed_is_kept(app, client, signed_in):
    response = add(client, {"company": "Babbage & Co", "line2": "Flat 3", "country": "GB"})
    assert response.status_code == 422
    page = page_text(response)
    for message in (
        "Enter the full name.",
        "Enter the first line of the address.",
        "Enter the town or city.",
        "Enter the postcode.",
    ):
        assert message in page
    assert 'value="Babbage & Co"' in page
    assert 'value="Flat 3"' in page
    assert "<html" in page
    assert rows(app) == []


def test_a_required_field_that_shows_nothing_is_refused_like_an_empty_one(app, client, signed_in):
    """A zero-width space alone went on the label as the first line (found by review)."""
    response = add(client, {**HOME, "full_name": "\u200b", "line1": "\u200b\u2060"})
    assert response.status_code == 422
    page = page_text(response)
    assert "Enter the full name." in page
    assert "Enter the first line of the address." in page
    assert 'value="London"' in page
    assert rows(app) == []


def test_an_invalid_address_with_htmx_is_the_form_again_with_status_422(app, client, signed_in):
    client.get("/account/addresses")
    response = client.htmx("POST", "/account/addresses", data={**HOME, "postcode": "12345"})
    assert response.status_code == 422
    body = page_text(response)
    assert "<html" not in body
    assert body.lstrip().startswith("<form")
    assert "Enter a postcode like SW1A 1AA." in body
    assert 'value="12 St James\'s Square"' in body
    assert 'value="12345"' in body
    assert rows(app) == []


def test_a_country_not_on_the_list_is_refused(app, client, signed_in):
    response = add(client, {**HOME, "country": "XX"})
    assert response.status_code == 422
    assert "Choose a country from the list." in page_text(response)


def test_countries_list_the_home_market_first_then_alphabetically():
    codes = [code for code, _ in COUNTRIES]
    assert codes[0] == "GB"
    names = [name for _, name in COUNTRIES[1:]]
    assert names == sorted(names)
    assert {"US", "CA", "DE", "FR", "IT", "ES", "NL", "IE", "AU"} <= set(codes)
    assert all(len(code) == 2 and code.isupper() for code in codes)


@pytest.mark.parametrize(
    ("country", "typed", "stored"),
    [
        ("GB", "sw1a1aa", "SW1A 1AA"),
        ("GB", " EC1A  1BB ", "EC1A 1BB"),
        ("GB", "M1 1AE", "M1 1AE"),
        ("US", "94105", "94105"),
        ("US", "94105-1234", "94105-1234"),
        ("US", "941051234", "94105-1234"),
        ("CA", "k1a0b1", "K1A 0B1"),
        ("DE", "10115", "10115"),
        ("FR", "75001", "75001"),
        ("IT", "00184", "00184"),
        ("ES", "28013", "28013"),
        ("NL", "1012ab", "1012 AB"),
        ("IE", "d02x285", "D02 X285"),
        ("IE", "D6W 1234", "D6W 1234"),
        ("AU", "2000", "2000"),
        ("PT", "1100148", "1100-148"),
        ("SE", "11455", "114 55"),
        ("HK", "", ""),
        ("AE", "PO Box 1234", "PO Box 1234"),
    ],
)
def test_postcodes_in_the_usual_formats_are_accepted_and_written_properly(country, typed, stored):
    assert normalise_postcode(country, typed) == stored


@pytest.mark.parametrize(
    ("country", "typed"),
    [
        ("GB", ""),
        ("GB", "12345"),
        ("GB", "SW1A"),
        ("US", "9410"),
        ("US", "94105-12"),
        ("CA", "D1A 0B1"),
        ("DE", "1011"),
        ("FR", "750011"),
        ("NL", "0123 AB"),
        ("NL", "1012"),
        ("IE", "B02 X285"),
        ("AU", "20000"),
        ("HK", "x" * 21),
    ],
)
def test_postcodes_not_in_the_country_format_are_refused(country, typed):
    with pytest.raises(PostcodeError):
        normalise_postcode(country, typed)


def test_a_postcode_and_phone_typed_in_another_scripts_digits_are_kept_as_couriers_read_them(
    app, client, signed_in
):
    """Python's ``\\d`` takes any script's digits: a postcode in Arabic-Indic or full-width
    digits (as an Arabic or a Japanese keyboard types them) was kept as typed, for a label no
    courier's system reads (found by review)."""
    for typed, phone, stored in (
        ("SW1A \u0661AA", "+44 \u0662\u0660 \u0667\u0669\u0664\u0666 0000", "SW1A 1AA"),
        ("\uff33\uff37\uff11\uff21\uff11\uff21\uff21", "+44 20 7946 0000", "SW1A 1AA"),
    ):
        assert add(client, {**HOME, "postcode": typed, "phone": phone}).status_code == 303
        kept = rows(app, signed_in)[-1]
        assert (kept.postcode, kept.phone) == (stored, "+44 20 7946 0000")

    assert add(client, {**STUDIO, "postcode": "\u0669\u0664\u0661\u0660\u0665"}).status_code == 303
    assert rows(app, signed_in)[-1].postcode == "94105"
    # A phone typed on a full-width keyboard, its plus sign too.
    full_width = "\uff0b\uff14\uff14 \uff12\uff10 \uff17\uff19\uff14\uff16 \uff10\uff10\uff10\uff10"
    assert add(client, {**HOME, "phone": full_width}).status_code == 303
    assert rows(app, signed_in)[-1].phone == "+44 20 7946 0000"
    # A letter of another script that looks like A is still no postcode.
    assert add(client, {**HOME, "postcode": "SW1\u0410 1AA"}).status_code == 422


def test_a_us_zip_code_is_asked_for_by_name(client, signed_in):
    response = add(client, {**STUDIO, "postcode": "ABCDE"})
    assert response.status_code == 422
    assert "Enter a ZIP code like 94105 or 94105-1234." in page_text(response)


def test_editing_without_javascript_uses_its_own_page_and_redirects(app, client, signed_in):
    add(client, HOME)
    [address] = rows(app, signed_in)
    page = client.get(f"/account/addresses/{address.id}/edit")
    assert page.status_code == 200
    assert "<html" in page_text(page)
    assert 'value="12 St James\'s Square"' in page_text(page)

    response = client.post(
        f"/account/addresses/{address.id}",
        data={"csrf_token": client.csrf_token, **HOME, "line1": "10 Downing Street"},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/account/addresses"
    [address] = rows(app, signed_in)
    assert address.line1 == "10 Downing Street"


def test_editing_with_htmx_swaps_the_card_for_the_form_and_back(app, client, signed_in):
    add(client, HOME)
    [address] = rows(app, signed_in)
    form = client.htmx("GET", f"/account/addresses/{address.id}/edit")
    assert form.status_code == 200
    body = page_text(form)
    assert "<html" not in body
    assert f'<form id="address-{address.id}"' in body
    assert f'id="address-{address.id}-line1"' in body

    invalid = client.htmx(
        "POST", f"/account/addresses/{address.id}", data={**HOME, "city": "", "line2": "Top floor"}
    )
    assert invalid.status_code == 422
    assert "Enter the town or city." in page_text(invalid)
    assert 'value="Top floor"' in page_text(invalid)

    saved = client.htmx(
        "POST", f"/account/addresses/{address.id}", data={**HOME, "line2": "Top floor"}
    )
    assert saved.status_code == 200
    body = page_text(saved)
    assert '<article class="address-card' in body
    assert f'id="address-{address.id}"' in body
    assert "Top floor" in body
    assert "<html" not in body
    assert rows(app, signed_in)[0].line2 == "Top floor"

    cancel = client.htmx("GET", f"/account/addresses/{address.id}")
    assert cancel.status_code == 200
    assert "<article" in page_text(cancel)


def test_deleting_with_and_without_htmx(app, client, signed_in):
    add(client, HOME)
    add(client, STUDIO)
    first, second = rows(app, signed_in)

    plain = client.post(
        f"/account/addresses/{first.id}/delete", data={"csrf_token": client.csrf_token}
    )
    assert plain.status_code == 303
    assert plain.headers["Location"] == "/account/addresses"

    swapped = client.htmx("POST", f"/account/addresses/{second.id}/delete")
    assert swapped.status_code == 200
    body = page_text(swapped)
    assert "<article" not in body
    assert "Address deleted." in body
    assert rows(app, signed_in) == []


def test_making_a_default_clears_the_old_one_in_either_order(app, client, signed_in):
    add(client, HOME)
    add(client, STUDIO)
    first, second = rows(app, signed_in)

    for target in (second, first, second):
        response = client.post(
            f"/account/addresses/{target.id}/default/shipping",
            data={"csrf_token": client.csrf_token},
        )
        assert response.status_code == 303
        assert defaults(app, signed_in) == ([target.id], [])

    response = client.htmx("POST", f"/account/addresses/{first.id}/default/shipping")
    assert response.status_code == 200
    body = page_text(response)
    assert body.lstrip().startswith(
        f'<article class="address-card address-card--default" id="address-{first.id}"'
    )
    # the old default's card is redrawn in place, no longer the default
    [old_default] = elements(response, f'article#address-{second.id}[hx-swap-oob="true"]')
    assert "address-card--default" not in old_default["class"]
    assert "This is now your default shipping address." in body
    assert defaults(app, signed_in) == ([first.id], [])

    client.htmx("POST", f"/account/addresses/{second.id}/default/billing")
    assert defaults(app, signed_in) == ([first.id], [second.id])


def test_two_windows_making_two_defaults_at_once_leave_one(app, client, signed_in):
    """Both read the old default before either wrote: the second broke the one-default index
    (a 500). The address book now takes turns: the last one asked is the default."""
    add(client, HOME, shipping=True)
    add(client, STUDIO)
    add(client, {**STUDIO, "line1": "2 Infinite Loop"})
    _, second, third = rows(app, signed_in)
    other = app.test_client()
    for cookie in ("session",):
        other.set_cookie(cookie, client.get_cookie(cookie).value)
    answers: list[int] = []
    window = threading.Thread(
        target=lambda: answers.append(
            other.htmx("POST", f"/account/addresses/{third.id}/default/shipping").status_code
        )
    )
    other.csrf_token = client.csrf_token

    def the_other_window() -> None:
        window.start()
        window.join(3)  # it waits for this window's turn, or it is done

    with meanwhile(app, "UPDATE addresses", the_other_window) as ran:
        response = client.htmx("POST", f"/account/addresses/{second.id}/default/shipping")
    window.join(30)

    assert ran
    assert (response.status_code, answers) == (200, [200])
    assert defaults(app, signed_in) == ([third.id], [])


def holding_the_account(sql: str) -> bool:
    """The first statement of ``hold_row`` on the account's row, on either database."""
    return sql.startswith("UPDATE users") or (
        sql.startswith("SELECT users.id") and "FOR UPDATE" in sql
    )


def another_window(app, client):
    """The same browser's other window: its session, its CSRF token."""
    other = app.test_client()
    other.set_cookie("session", client.get_cookie("session").value)
    other.csrf_token = client.csrf_token
    return other


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize("change", ["edit", "default"])
def test_an_address_deleted_in_another_window_as_this_one_changes_it_is_a_409(
    app, client, signed_in, change, htmx
):
    """Before, the change's UPDATE matched no row: a 500 (StaleDataError)."""
    add(client, HOME)
    [home] = rows(app, signed_in)
    client.get("/account/addresses")
    other = another_window(app, client)

    def delete() -> None:
        assert other.htmx("POST", f"/account/addresses/{home.id}/delete").status_code == 200

    url, data = f"/account/addresses/{home.id}", {**HOME, "city": "Bath"}
    moment = "UPDATE addresses"
    if change == "default":
        # Read, then deleted before the address book is held for the change.
        url, data = f"/account/addresses/{home.id}/default/shipping", {}
        moment = holding_the_account
    with meanwhile(app, moment, lambda: in_another_window(delete)) as ran:
        if htmx:
            response = client.htmx("POST", url, data=data)
        else:
            response = client.post(url, data={"csrf_token": client.csrf_token, **data})

    assert ran
    assert response.status_code == 409
    assert "changed or removed meanwhile" in page_text(response)
    assert rows(app, signed_in) == []


def test_adding_a_new_default_replaces_the_old_one(app, client, signed_in):
    add(client, HOME, shipping=True, billing=True)
    client.get("/account/addresses")
    response = client.htmx("POST", "/account/addresses", data={**STUDIO, "default_billing": "y"})
    assert response.status_code == 200
    first, second = rows(app, signed_in)
    assert defaults(app, signed_in) == ([first.id], [second.id])
    assert elements(response, f'article#address-{first.id}[hx-swap-oob="true"]')


def test_deleting_the_default_leaves_no_default(app, client, signed_in):
    add(client, HOME, shipping=True, billing=True)
    add(client, STUDIO)
    first, _ = rows(app, signed_in)
    client.post(f"/account/addresses/{first.id}/delete", data={"csrf_token": client.csrf_token})
    assert defaults(app, signed_in) == ([], [])
    assert "None chosen yet" in page_text(client.get("/account"))


def test_the_database_allows_one_default_of_each_kind_per_user(app, signed_in):
    from sqlalchemy.exc import IntegrityError

    with app.app_context():
        for line1 in ("1 A Street", "2 B Street"):
            db.session.add(
                Address(
                    user_id=signed_in,
                    full_name="Ada",
                    line1=line1,
                    city="London",
                    country="GB",
                    is_default_shipping=True,
                )
            )
        with pytest.raises(IntegrityError):
            db.session.flush()
        db.session.rollback()


def test_an_address_book_has_a_limit(app, client, signed_in):
    from elysium.services.addresses import MAX_ADDRESSES

    with app.app_context():
        for number in range(MAX_ADDRESSES):
            db.session.add(
                Address(
                    user_id=signed_in,
                    full_name="Ada",
                    line1=f"{number} Street",
                    city="London",
                    country="GB",
                    postcode="SW1A 1AA",
                )
            )
        db.session.commit()
    response = add(client, HOME)
    assert response.status_code == 422
    assert f"You can keep up to {MAX_ADDRESSES} addresses." in page_text(response)


@pytest.fixture
def someone_elses_address(app, auth) -> int:
    owner = auth.create_user("grace@example.com")
    with app.app_context():
        address = Address(
            user_id=owner,
            full_name="Grace Hopper",
            line1="1 Navy Yard",
            city="Arlington",
            country="US",
            postcode="22202",
        )
        db.session.add(address)
        db.session.commit()
        return address.id


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/account/addresses/{id}"),
        ("GET", "/account/addresses/{id}/edit"),
        ("POST", "/account/addresses/{id}"),
        ("POST", "/account/addresses/{id}/delete"),
        ("POST", "/account/addresses/{id}/default/shipping"),
        ("POST", "/account/addresses/{id}/default/billing"),
    ],
)
@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_someone_elses_address_is_not_found(
    app, client, signed_in, someone_elses_address, method, path, htmx
):
    url = path.format(id=someone_elses_address)
    client.get("/account/addresses")
    data = {**STUDIO, "full_name": "Mallory"} if method == "POST" else None
    if htmx:
        response = client.htmx(method, url, data=data)
    elif method == "POST":
        response = client.post(url, data={"csrf_token": client.csrf_token, **data})
    else:
        response = client.get(url)
    assert response.status_code == 404
    assert "Grace" not in page_text(response)
    [address] = rows(app)
    assert address.full_name == "Grace Hopper"
    assert not address.is_default_shipping
    assert not address.is_default_billing
    with app.app_context():
        assert db.session.get(User, signed_in).addresses == []


def test_an_address_deleted_in_another_window_is_never_the_next_ones_id(app, client, signed_in):
    """On SQLite a new address took a deleted one's id (the highest): the first window's
    "Delete" for the old address deleted the new one and said "Address deleted" (found by
    review)."""
    add(client, HOME)
    add(client, STUDIO)
    _, studio = rows(app, signed_in)
    client.get("/account/addresses")
    other = another_window(app, client)
    assert other.htmx("POST", f"/account/addresses/{studio.id}/delete").status_code == 200
    assert other.htmx("POST", "/account/addresses", data=STUDIO).status_code == 200
    assert rows(app, signed_in)[-1].id > studio.id

    response = client.post(
        f"/account/addresses/{studio.id}/delete", data={"csrf_token": client.csrf_token}
    )

    assert response.status_code == 404
    assert len(rows(app, signed_in)) == 2
