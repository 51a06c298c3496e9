"""Account forms. They read and bound the input; the rules live in the services."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired

from elysium.services.configuration import RING_SIZES
from elysium.services.profiles import PREFERRED_METALS, ProfileChanges
from elysium.web.forms import EMAIL_RULES, TEXT, AccountForm


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


class ConfirmNewEmailForm(FlaskForm):
    """The button on the page an email-change link opens (its CSRF token is all it carries)."""


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


class DeleteAccountForm(AccountForm):
    password = PasswordField("Your password")
    confirm_email = StringField("Type your email address to confirm")
