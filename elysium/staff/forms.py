"""The back office's action forms. They read and bound the input; the rules live in the
services (``services/fulfilment.py``)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Regexp

from elysium.models.orders import Order
from elysium.services.fulfilment import REASON_MAX
from elysium.services.shipping import CARRIERS
from elysium.web.forms import one_line_break

REASON = [Length(max=REASON_MAX, message=f"Use at most {REASON_MAX} characters.")]
# The key the page drew for its form (``secrets.token_urlsafe``), part of the refund's own
# idempotency key: anything else is not a form this shop drew.
EXPIRED = "This form has expired: reload the page and try again."
REQUEST_KEY = [Regexp(r"^[A-Za-z0-9_-]{0,64}$", message=EXPIRED)]
# Beside words kept from such a form, drawn again with a key of its own.
SEND_AGAIN = "This form had expired: nothing was saved. Your words are kept: send them again."


def new_request_key() -> str:
    """A form's key, drawn with it (a field's default)."""
    return secrets.token_urlsafe(16)


class StaffForm(FlaskForm):
    def field_errors(self) -> dict[str, str]:
        """The first message per field ("" for the form itself, e.g. a missing CSRF token)."""
        errors = {name: messages[0] for name, messages in self.errors.items() if messages}
        if "csrf_token" in errors:
            errors[""] = EXPIRED
            del errors["csrf_token"]
        if "request_key" in errors:  # a hidden field: its message goes above the form
            errors[""] = errors.pop("request_key")
        return errors


class PanelForm(StaffForm):
    """A form of the order's actions panel (``staff/fulfilment/_actions.html``). Each sends
    what the order's page showed that the panel's actions are checked against: its warning
    (``attention_seen``, ``orders.attention_seen``), read by the forms that make, ship or hand
    over the piece, and how many refunds it listed (``refunds_seen``,
    ``RefundRequest.refunds_seen``), read by a refund. Sent back to correct, the panel is drawn
    again with these, not with the order as it is now (``staff.fulfilment.Shown``)."""

    attention_seen = HiddenField()
    refunds_seen = HiddenField()

    def refunds_shown(self) -> int | None:
        """How many refunds the page listed (None: the form doesn't say)."""
        raw = (self.refunds_seen.data or "").strip()
        return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 6 else None


class ActionForm(PanelForm):
    """An action that needs nothing but the staff member's say-so (and the CSRF token)."""


def _carrier_choices() -> list[SelectChoice]:
    return [SelectChoice("", "Choose the courier")] + [
        SelectChoice(carrier.code, carrier.name) for carrier in CARRIERS.values()
    ]


class ShipForm(ActionForm):
    carrier = SelectField("Courier", choices=_carrier_choices(), validate_choice=False)
    tracking_number = StringField("Tracking number", validators=[Length(max=100)])
    notify = BooleanField("Email the customer", default=True)


class DeliverForm(ActionForm):
    notify = BooleanField("Email the customer", default=True)


class CancelForm(PanelForm):
    reason = TextAreaField(
        "Why (for the order's record)",
        validators=[DataRequired("Say why, for the order's record."), *REASON],
        filters=[one_line_break],
    )
    notify = BooleanField("Email the customer", default=True)
    request_key = HiddenField(validators=REQUEST_KEY)
    # What the page said cancelling does (``fulfilment.what_cancel_does``): a cancel drawn
    # for an order with no money is never sent back as a refund of a payment made since.
    does = HiddenField()


class GiveBackForm(PanelForm):
    """Give back the money held after the order ended (``fulfilment.held_after_it_ended``)."""

    reason = TextAreaField(
        "Why (for the order's record)",
        validators=[DataRequired("Say why, for the order's record."), *REASON],
        filters=[one_line_break],
    )
    notify = BooleanField("Email the customer", default=True)


class RefundForm(PanelForm):
    amount = StringField("Amount", validators=[DataRequired("Enter an amount to refund.")])
    reason = TextAreaField(
        "Reason (for the order's record)", validators=REASON, filters=[one_line_break]
    )
    notify = BooleanField("Email the customer", default=True)
    request_key = HiddenField(validators=REQUEST_KEY)

    def restock_from(self, values: Mapping[str, str], order: Order) -> dict[int, int] | None:
        """Pieces to put back on sale, per order line (``restock-<line id>``), or None when
        a value isn't a whole number."""
        restock: dict[int, int] = {}
        for line in order.lines:
            raw = (values.get(f"restock-{line.id}") or "0").strip()
            # isdigit() alone accepts "²" and other digits int() refuses.
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 3:
                return None
            if int(raw):
                restock[line.id] = int(raw)
        return restock


class BulkForm(StaffForm):
    action = SelectField(
        "With the selected orders",
        choices=[SelectChoice("fulfil", "Mark fulfilled"), SelectChoice("ship", "Ship")],
    )
    carrier = SelectField("Courier", choices=_carrier_choices(), validate_choice=False)
    notify = BooleanField("Email the customers", default=True)
