"""Form pieces several areas share: email rules, prefixed ids, the postal address."""

from __future__ import annotations

import re
import unicodedata

from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length

from elysium.countries import COUNTRIES, DEFAULT_COUNTRY
from elysium.extensions import db
from elysium.services import accounts
from elysium.services.addresses import AddressInput

EMAIL_RULES = [
    DataRequired("Enter your email address."),
    Length(max=254, message="That email address is too long."),
    Email("Enter an email address like name@example.com.", check_deliverability=False),
]


class WholeNumberField(IntegerField):
    """A whole number written in at most twelve ASCII digits (a page, a price in pounds).

    WTForms' own takes whatever ``int()`` reads: a number of 309 digits or more then failed its
    range check (``NumberRange`` compares it as a float) with an error, not a message."""

    _written = re.compile(r"\s*[0-9]{1,12}\s*")

    def process_formdata(self, valuelist: list) -> None:
        if valuelist and valuelist[0].strip() and not self._written.fullmatch(valuelist[0]):
            self.data = None
            raise ValueError(self.gettext("Not a valid integer value."))
        super().process_formdata(valuelist)


def one_line_break(value: str | None) -> str | None:
    """A textarea's line breaks as the browser counted them against its ``maxlength``: one
    character each. Sent without JavaScript they come as two (CR LF), with htmx as one, so a
    text the box took would be refused as too long by a form of the same length."""
    return value.replace("\r\n", "\n") if isinstance(value, str) else value


def strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


def email_address(value: str | None) -> str | None:
    """An address typed on a form, as accounts keep theirs (``accounts.address_as_kept``):
    an order to it is then found as the account's, in a comparison either database makes."""
    return accounts.address_as_kept(db.session, value) if isinstance(value, str) else value


class AccountForm(FlaskForm):
    """A form whose element ids carry a prefix, so several forms can share one page.

    Only the ids change; field names stay plain, so each form posts the same names with or
    without JavaScript.
    """

    id_prefix: str | None = None

    def __init__(self, *args, id_prefix: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        prefix = id_prefix or self.id_prefix
        if prefix:
            for field in self:
                field.id = f"{prefix}-{field.name}"


# Generous caps so that absurd input stops here; the services give the real limits.
TEXT = [Length(max=400, message="That is too long.")]


class AddressForm(AccountForm):
    full_name = StringField("Full name", validators=TEXT)
    company = StringField("Company", validators=TEXT)
    line1 = StringField("Address line 1", validators=TEXT)
    line2 = StringField("Address line 2", validators=TEXT)
    city = StringField("Town or city", validators=TEXT)
    region = StringField("County, state or region", validators=TEXT)
    postcode = StringField("Postcode", validators=TEXT)
    country = SelectField(
        "Country",
        choices=[SelectChoice(code, name) for code, name in COUNTRIES],
        default=DEFAULT_COUNTRY,
        validate_choice=False,
    )
    phone = StringField(
        "Phone", validators=TEXT, description="For the courier, if a signature is needed."
    )
    default_shipping = BooleanField("Use as my default shipping address")
    default_billing = BooleanField("Use as my default billing address")

    def address(self) -> AddressInput:
        return AddressInput(
            **{name: self[name].data or "" for name in AddressInput.__dataclass_fields__}
        )


SEARCH_MAX_LENGTH = 100


def searchable(text: str) -> str:
    """Search text without control characters (no name or number holds any), spaces made
    single, trimmed to a sensible length."""
    printable = "".join(char for char in text if unicodedata.category(char)[0] != "C")
    return " ".join(printable.split())[:SEARCH_MAX_LENGTH]
