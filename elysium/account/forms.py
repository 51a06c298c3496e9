"""Account forms. They read and bound the input; the rules live in the services."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from elysium.auth.forms import EMAIL_RULES
from elysium.countries import COUNTRIES, DEFAULT_COUNTRY
from elysium.services.addresses import AddressInput
from elysium.services.configuration import RING_SIZES
from elysium.services.profiles import PREFERRED_METALS, ProfileChanges


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


class ProfileForm(AccountForm):
    id_prefix = "profile"

    first_name = StringField("First name", validators=TEXT)
    last_name = StringField("Last name", validators=TEXT)
    phone = StringField("Phone", validators=TEXT, description="Only used about your orders.")
    preferred_metal = SelectField(
        "Preferred metal",
        choices=[
            SelectChoice("", "No preference"),
            *(SelectChoice(code, label) for code, label in PREFERRED_METALS.items()),
        ],
        validate_choice=False,
    )
    ring_size = SelectField(
        "Ring size (US)",
        choices=[SelectChoice("", "Not sure"), *(SelectChoice(size, size) for size in RING_SIZES)],
        validate_choice=False,
    )
    marketing_consent = BooleanField("Send me news of new collections and private events")

    def changes(self) -> ProfileChanges:
        return ProfileChanges(
            first_name=self.first_name.data or "",
            last_name=self.last_name.data or "",
            phone=self.phone.data or "",
            preferred_metal=self.preferred_metal.data or "",
            ring_size=self.ring_size.data or "",
            marketing_consent=bool(self.marketing_consent.data),
        )


class EmailForm(AccountForm):
    id_prefix = "email"

    email = EmailField("New email", validators=EMAIL_RULES)
    current_password = PasswordField(
        "Current password", validators=[DataRequired("Enter your current password.")]
    )


class PasswordForm(AccountForm):
    id_prefix = "password"

    current_password = PasswordField(
        "Current password", validators=[DataRequired("Enter your current password.")]
    )
    password = PasswordField(
        "New password",
        validators=[DataRequired("Choose a new password.")],
        description="At least 10 characters. Every other session will be signed out.",
    )


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


class DeleteAccountForm(AccountForm):
    password = PasswordField("Your password")
    confirm_email = StringField("Type your email address to confirm")
