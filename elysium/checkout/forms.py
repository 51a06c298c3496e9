"""Checkout forms: who the order is for and where it goes. The rules live in the services."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, ValidationError

from elysium.services.profiles import printable_problem
from elysium.web.forms import EMAIL_RULES, AddressForm, email_address, one_line_break, strip

GIFT_MESSAGE_MAX = 300
NEW_ADDRESS = "new"


def printable(_form: FlaskForm, field: TextAreaField) -> None:
    """The gift message is handwritten on a card: nothing in it may be invisible."""
    if problem := printable_problem(field.data or ""):
        raise ValidationError(problem)


class CheckoutForm(FlaskForm):
    email = EmailField("Email", validators=EMAIL_RULES, filters=[email_address])
    shipping_choice = SelectField(
        "Deliver to", choices=[SelectChoice(NEW_ADDRESS, "A new address")], validate_choice=False
    )
    billing_same = BooleanField("Billing address is the same as delivery", default=True)
    gift_message = TextAreaField(
        "Gift message (optional)",
        validators=[
            Length(max=GIFT_MESSAGE_MAX, message=f"Use at most {GIFT_MESSAGE_MAX} characters."),
            printable,
        ],
        filters=[strip, one_line_break],
        description=f"Handwritten on a card in the box; up to {GIFT_MESSAGE_MAX} characters.",
    )
    # The bag as the page showed it (``services.checkout.bag_as_shown``): what the shopper saw
    # is what they pay for, or they are told what changed.
    bag_as_shown = HiddenField()
    # Sent by the button offered when the bag is already being paid for with other details.
    replace = BooleanField()


def address_form(prefix: str, **kwargs) -> AddressForm:
    """An address sub-form; its fields are named ``<prefix>-line1`` and so on."""
    return AddressForm(prefix=prefix, meta={"csrf": False}, **kwargs)
