"""Wishlist forms. They read and bound the input; the configurator's rules live in the services."""

from __future__ import annotations

from collections.abc import Mapping

from flask_wtf import FlaskForm
from wtforms import HiddenField
from wtforms.validators import AnyOf, DataRequired, Length, Optional

CONFIGURATION_FIELDS = ("metal", "diamond", "size", "engraving")

# Generous caps so that absurd input stops here; ``configure`` gives the real limits.
CHOICE = [Optional(), Length(max=200, message="That choice is too long.")]


def choices_from(data: Mapping[str, str]) -> dict[str, str]:
    """The configurator's four choices from a query string or form, capped in length."""
    return {name: (data.get(name) or "")[:200] for name in CONFIGURATION_FIELDS}


class HeartForm(FlaskForm):
    """The heart: a piece, optionally in one configuration, and where to go back to.

    ``scope`` is ``piece`` on a listing card (the piece as a whole) and ``configuration`` on
    the product page (exactly the configurator's choices).
    """

    slug = HiddenField(validators=[DataRequired(), Length(max=120)])
    scope = HiddenField(default="configuration", validators=[AnyOf(("piece", "configuration"))])
    # What the heart offered as it was drawn ("save" or "remove"); empty: the other way round
    # from what is saved now.
    intent = HiddenField(validators=[Optional(), AnyOf(("save", "remove"))])
    next = HiddenField(validators=[Optional(), Length(max=2000)])
    metal = HiddenField(validators=CHOICE)
    diamond = HiddenField(validators=CHOICE)
    size = HiddenField(validators=CHOICE)
    engraving = HiddenField(validators=CHOICE)

    @property
    def whole_piece(self) -> bool:
        return self.scope.data == "piece"

    def choices(self) -> dict[str, str]:
        return {name: self[name].data or "" for name in CONFIGURATION_FIELDS}


class ItemActionForm(FlaskForm):
    """Move to bag, Remove: a button and its CSRF token."""
