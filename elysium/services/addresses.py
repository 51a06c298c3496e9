"""The address book: saved addresses and the one default for shipping and for billing.

Every lookup is by address id *and* owner, so another shopper's address is simply not found.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

from sqlalchemy import select

from elysium.countries import PostcodeError, is_country, normalise_postcode
from elysium.models.users import Address, User
from elysium.services.errors import InvalidInputError
from elysium.services.profiles import (
    clean_phone,
    clean_text,
    phone_problem,
    printable_problem,
    shows_nothing,
)
from elysium.services.sql import AnySession, hold_row

MAX_ADDRESSES = 20
LIMITS = {
    "full_name": 200,
    "company": 200,
    "line1": 200,
    "line2": 200,
    "city": 120,
    "region": 120,
}
REQUIRED = {
    "full_name": "Enter the full name.",
    "line1": "Enter the first line of the address.",
    "city": "Enter the town or city.",
}


class Default(enum.StrEnum):
    SHIPPING = "shipping"
    BILLING = "billing"

    @property
    def attribute(self) -> str:
        return f"is_default_{self.value}"


class AddressError(InvalidInputError):
    """An address that can't be saved."""


@dataclass(frozen=True)
class AddressInput:
    full_name: str = ""
    company: str = ""
    line1: str = ""
    line2: str = ""
    city: str = ""
    region: str = ""
    postcode: str = ""
    country: str = ""
    phone: str = ""


def clean(data: AddressInput) -> AddressInput:
    """The address as it will be stored, or :class:`AddressError` saying what to fix."""
    values = {name: clean_text(value) for name, value in asdict(data).items()}
    values["country"] = values["country"].upper()
    values["phone"] = clean_phone(values["phone"])
    errors: dict[str, str] = {
        name: problem for name, value in values.items() if (problem := printable_problem(value))
    }
    for name, message in REQUIRED.items():
        if shows_nothing(values[name]):
            errors[name] = message
    for name, limit in LIMITS.items():
        if len(values[name]) > limit:
            errors[name] = f"Use at most {limit} characters."
    if not is_country(values["country"]):
        errors["country"] = "Choose a country from the list."
    else:
        try:
            values["postcode"] = normalise_postcode(values["country"], values["postcode"])
        except PostcodeError as error:
            errors["postcode"] = str(error)
    if problem := phone_problem(values["phone"]):
        errors["phone"] = problem
    if errors:
        raise AddressError(errors)
    return AddressInput(**values)


def addresses_of(session: AnySession, user: User) -> list[Address]:
    return list(
        session.scalars(select(Address).where(Address.user_id == user.id).order_by(Address.id))
    )


def address_of(session: AnySession, user: User, address_id: int) -> Address | None:
    """The user's address with this id; None for anyone else's (the caller answers 404)."""
    return session.scalar(
        select(Address).where(Address.id == address_id, Address.user_id == user.id)
    )


def default_address(session: AnySession, user: User, kind: Default) -> Address | None:
    return session.scalar(
        select(Address).where(Address.user_id == user.id, getattr(Address, kind.attribute))
    )


class Added(enum.StrEnum):
    NEW = "new"
    ALREADY_THERE = "already_there"
    NOW_A_DEFAULT = "now_a_default"  # already there, and made a default it wasn't


def add_address(
    session: AnySession, user: User, data: AddressInput, defaults: frozenset[Default] = frozenset()
) -> tuple[Address, list[Address], Added]:
    """Save a new address; returns it, any address that stopped being a default, and what
    became of it. The same address already in the book (the form sent twice: a double click,
    Back and send again, two at once) is not kept again: it is the one returned, made a
    default as asked."""
    cleaned = clean(data)
    hold_address_book(session, user)
    kept = addresses_of(session, user)
    same = next((address for address in kept if input_from(address) == cleaned), None)
    if same is None and len(kept) >= MAX_ADDRESSES:
        raise AddressError({"": f"You can keep up to {MAX_ADDRESSES} addresses."})
    address = same or Address(user_id=user.id, **asdict(cleaned))
    if same is None:
        session.add(address)
        session.flush()
    was_default = {kind for kind in Default if getattr(address, kind.attribute)}
    replaced: list[Address] = []
    for kind in sorted(defaults):
        replaced += make_default(session, user, address, kind)
    if same is None:
        return address, _unique(replaced), Added.NEW
    became = set(defaults) - was_default
    return address, _unique(replaced), Added.NOW_A_DEFAULT if became else Added.ALREADY_THERE


def update_address(session: AnySession, address: Address, data: AddressInput) -> Address:
    cleaned = clean(data)
    for name, value in asdict(cleaned).items():
        setattr(address, name, value)
    session.flush()
    return address


def make_default(session: AnySession, user: User, address: Address, kind: Default) -> list[Address]:
    """Make ``address`` the user's default of this kind; returns the address(es) it replaces.

    The old default is cleared and flushed before the new one is set: within one flush the
    unit of work orders UPDATEs by primary key, so a newer default could otherwise be written
    first and break the partial unique index (one default of each kind per user).
    """
    assert address.user_id == user.id
    hold_address_book(session, user)
    column = getattr(Address, kind.attribute)
    previous = list(
        session.scalars(
            select(Address).where(Address.user_id == user.id, column, Address.id != address.id)
        )
    )
    for old in previous:
        setattr(old, kind.attribute, False)
    session.flush()
    setattr(address, kind.attribute, True)
    session.flush()
    return previous


def hold_address_book(session: AnySession, user: User) -> None:
    """Take the account's row until the transaction ends: two windows changing its defaults
    (or adding at its limit) take turns, the second reading what the first committed. Two
    defaults made at once broke the one-default index (a 500), and two adds passed the cap."""
    hold_row(session, User, user.id)


def delete_address(session: AnySession, address: Address) -> None:
    """Remove the address; if it was a default, there is simply no default afterwards. Takes
    its turn on the address book, as a change of its defaults does."""
    hold_row(session, User, address.user_id)
    session.delete(address)
    session.flush()


def input_from(address: Address) -> AddressInput:
    return AddressInput(**{name: getattr(address, name) for name in asdict(AddressInput())})


def as_snapshot(address: Address) -> dict[str, str]:
    """The address as plain data (for an order's snapshot or the shopper's export)."""
    return asdict(input_from(address))


def deliverable_snapshot(address: Address) -> dict[str, str]:
    """A saved address as an order takes it, checked again by today's rules: one saved before
    (a country no longer delivered to, a postcode written before its rule) raises
    :class:`AddressError`, for the shopper to edit it or choose another."""
    return as_plain(clean(input_from(address)))


def as_plain(data: AddressInput) -> dict[str, str]:
    """A cleaned address as plain data (an order's snapshot of an address typed at checkout)."""
    return asdict(data)


def _unique(addresses: list[Address]) -> list[Address]:
    seen: dict[int, Address] = {}
    for address in addresses:
        seen.setdefault(address.id, address)
    return list(seen.values())
