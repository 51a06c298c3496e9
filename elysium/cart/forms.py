"""What the bag's forms post: a quantity, and (from the product page) a configuration."""

from __future__ import annotations

import re

from flask_wtf import FlaskForm
from wtforms import StringField, ValidationError

from elysium.services.cart import MAX_QUANTITY_PER_LINE, QUANTITY_MESSAGE

WHOLE_NUMBER = re.compile(r"[0-9]{1,3}")
CONFIGURATION_FIELDS = ("metal", "diamond", "size", "engraving")
SHOWN_MAX_LENGTH = 1000


def _quantity(raw: str | None) -> int:
    text = (raw or "").strip()
    if not WHOLE_NUMBER.fullmatch(text):
        raise ValidationError(QUANTITY_MESSAGE)
    quantity = int(text)
    if not 1 <= quantity <= MAX_QUANTITY_PER_LINE:
        raise ValidationError(QUANTITY_MESSAGE)
    return quantity


class QuantityForm(FlaskForm):
    """A line's new quantity: a whole number from 1 to the per-line maximum."""

    quantity = StringField("Quantity")

    def validate_quantity(self, field: StringField) -> None:
        self.value = _quantity(field.data)

    value: int = 0


class AddToCartForm(FlaskForm):
    """The product page's choices. Only the piece and its configuration are read: any price
    the client sends is ignored, the server computes it."""

    product = StringField("Piece")
    quantity = StringField("Quantity")
    metal = StringField("Metal")
    diamond = StringField("Diamond")
    size = StringField("Ring size")
    engraving = StringField("Engraving")

    value: int = 1

    def validate_quantity(self, field: StringField) -> None:
        # The product page always sends a quantity; a post without one means one piece.
        self.value = 1 if field.raw_data == [] else _quantity(field.data)

    def choices(self) -> dict[str, str]:
        """The choices as typed, whole: a refusal counts them as they are."""
        return {name: self[name].data or "" for name in CONFIGURATION_FIELDS}

    def shown_choices(self) -> dict[str, str]:
        """The choices to show again on a refusal: each as typed, up to ``SHOWN_MAX_LENGTH``
        characters (a longer one was not typed into the page, whose longest choice is an
        engraving of 25, and the page need not carry a megabyte of it back)."""
        return {name: value[:SHOWN_MAX_LENGTH] for name, value in self.choices().items()}
