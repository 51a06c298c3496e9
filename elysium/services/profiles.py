"""A shopper's name, phone and preferences (metal, ring size, marketing consent)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from elysium.countries import typed_as_ascii
from elysium.models.types import utcnow
from elysium.models.users import CustomerProfile, User
from elysium.services.configuration import RING_SIZES
from elysium.services.errors import InvalidInputError
from elysium.services.sql import AnySession

PREFERRED_METALS: dict[str, str] = {
    "yellow-gold": "18k yellow gold",
    "white-gold": "18k white gold",
    "rose-gold": "18k rose gold",
    "platinum": "Platinum",
}
NAME_MAX_LENGTH = 100
PHONE_MAX_LENGTH = 40
PHONE_PATTERN = re.compile(r"\+?[\d ()./-]+", re.ASCII)


class ProfileError(InvalidInputError):
    """Profile changes that can't be saved."""


@dataclass(frozen=True)
class ProfileChanges:
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    preferred_metal: str = ""
    ring_size: str = ""
    marketing_consent: bool = False


def clean_text(value: str | None) -> str:
    """Trimmed, with runs of whitespace (newlines and tabs included) made one space."""
    return " ".join((value or "").split())


def clean_phone(value: str | None) -> str:
    """A phone number as typed, its digits and signs in ASCII whatever script or width the
    keyboard wrote them in (the house calls it, a courier's system reads it)."""
    return clean_text(typed_as_ascii(value or ""))


# What can't be printed on a parcel's label or a gift card as it reads: control characters
# (line breaks and tabs are whitespace), the text-direction overrides and isolates (which make
# "Ada \u202eecalevoL" read "Ada Lovelace"), surrogates, private use and noncharacters.
# Marks that text in other scripts is written with (right-to-left marks, joiners, a soft
# hyphen, an emoji flag's tags) are not refused, nor code points newer than this Python's
# Unicode tables.
DIRECTION_OVERRIDES = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))


def printable_problem(text: str) -> str | None:
    """Why ``text`` can't go on a parcel's label or a gift card, naming the character, or
    None."""
    for char in text:
        code = ord(char)
        category = unicodedata.category(char)
        if (
            (category == "Cc" and char not in "\r\n\t")
            or char in DIRECTION_OVERRIDES
            or category in ("Cs", "Co")
            or 0xFDD0 <= code <= 0xFDEF
            or code & 0xFFFE == 0xFFFE
        ):
            return (
                f"Remove the invisible or control character (U+{code:04X}): it can't be "
                "printed on a label or a card."
            )
    return None


# What a reader sees: letters, numbers, punctuation and symbols. Spaces, format characters
# (a zero-width space, a joiner) and marks with no letter to sit on show nothing.
SEEN = frozenset("LNPS")


def shows_nothing(text: str) -> bool:
    """Whether ``text`` would look empty on a page, a label or an email: a required field
    holding only a zero-width space is as empty as one holding nothing."""
    return not any(unicodedata.category(char)[0] in SEEN for char in text)


def printable_name(value: str | None) -> str:
    """A name given by someone else (Google's profile) as a typed one would be kept: through
    :func:`clean_text`, without what can't be printed, at most ``NAME_MAX_LENGTH`` long."""
    kept = "".join(char for char in clean_text(value) if printable_problem(char) is None)
    return clean_text(kept)[:NAME_MAX_LENGTH].strip()


def name_problem(name: str) -> str | None:
    """Why a person's name (already through :func:`clean_text`) can't be kept, or None."""
    if len(name) > NAME_MAX_LENGTH:
        return f"Use at most {NAME_MAX_LENGTH} characters."
    return printable_problem(name)


def phone_problem(phone: str) -> str | None:
    if not phone:
        return None
    digits = sum(char.isdigit() for char in phone)
    if len(phone) > PHONE_MAX_LENGTH or not PHONE_PATTERN.fullmatch(phone) or not 6 <= digits <= 15:
        return "Enter a phone number like +44 20 7946 0000."
    return None


def profile_of(user: User) -> CustomerProfile:
    """The user's profile, created on first use (accounts made before profiles existed)."""
    if user.profile is None:
        user.profile = CustomerProfile()
    return user.profile


def update_profile(session: AnySession, user: User, changes: ProfileChanges) -> None:
    """Validate and apply; consent records when it was given, and withdrawing clears that."""
    first_name = clean_text(changes.first_name)
    last_name = clean_text(changes.last_name)
    phone = clean_phone(changes.phone)
    errors: dict[str, str] = {}
    for name, value in (("first_name", first_name), ("last_name", last_name)):
        if problem := name_problem(value):
            errors[name] = problem
    if problem := printable_problem(phone) or phone_problem(phone):
        errors["phone"] = problem
    if changes.preferred_metal and changes.preferred_metal not in PREFERRED_METALS:
        errors["preferred_metal"] = "Choose a metal from the list."
    if changes.ring_size and changes.ring_size not in RING_SIZES:
        errors["ring_size"] = "Choose a US ring size from 3 to 13."
    if errors:
        raise ProfileError(errors)

    user.first_name = first_name
    user.last_name = last_name
    user.phone = phone
    profile = profile_of(user)
    profile.preferred_metal = changes.preferred_metal or None
    profile.ring_size = changes.ring_size or None
    if changes.marketing_consent and not profile.marketing_consent:
        profile.marketing_consent_at = utcnow()
    elif not changes.marketing_consent:
        profile.marketing_consent_at = None
    profile.marketing_consent = changes.marketing_consent
    session.flush()
