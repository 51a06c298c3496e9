"""The staff's quote form: it reads the input as typed; the rules live in ``services.quotes``."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, StringField, TextAreaField
from wtforms.validators import Optional

from elysium.services.quotes import DEFAULT_DEPOSIT_PERCENT, DESCRIPTION_MAX


class QuoteForm(FlaskForm):
    description = TextAreaField(
        "What the price is for",
        description="The piece as agreed: metal, stones, size, finish. The client reads this.",
        render_kw={"rows": 4, "maxlength": DESCRIPTION_MAX},
    )
    price = StringField(
        "Price (£)",
        description="The whole price, for example 4,800.00",
        render_kw={"inputmode": "decimal", "autocomplete": "off"},
    )
    deposit_percent = StringField(
        "Deposit (%)",
        default=str(DEFAULT_DEPOSIT_PERCENT),
        description="From 1 to 100; the deposit is worked out from the price",
        render_kw={"inputmode": "numeric", "autocomplete": "off"},
    )
    # Optional here: the service says what is missing, with the other fields' messages.
    valid_until = DateField("Valid until", validators=[Optional()])
