"""The bespoke request form. It reads the input as typed; services.bespoke owns the rules."""

from __future__ import annotations

from wtforms import BooleanField, EmailField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice

from elysium.services.bespoke import (
    BUDGETS,
    MESSAGE_MAX_LENGTH,
    METAL_PREFERENCES,
    NOT_SURE,
    PIECE_TYPES,
    BespokeRequest,
    StartingPiece,
)
from elysium.web.forms import AccountForm


def _choices(prompt: str | None, options: dict[str, str]) -> list[SelectChoice]:
    first = [SelectChoice("", prompt)] if prompt else []
    return [*first, *(SelectChoice(code, label) for code, label in options.items())]


class BespokeForm(AccountForm):
    id_prefix = "bespoke"

    name = StringField("Your name")
    email = EmailField("Email", description="We'll reply here, usually within two working days.")
    phone = StringField("Phone", description="Optional: if you'd like us to call.")
    piece_type = SelectField(
        "What would you like made?",
        choices=_choices("Choose a piece", PIECE_TYPES),
        validate_choice=False,
    )
    metal = SelectField(
        "Metal", choices=_choices(None, METAL_PREFERENCES), default=NOT_SURE, validate_choice=False
    )
    budget = SelectField(
        "Budget", choices=_choices("Choose a range", BUDGETS), validate_choice=False
    )
    wanted_by = StringField(
        "Wanted by",
        description="Optional. Most commissions take six to ten weeks from the final design.",
    )
    message = TextAreaField(
        "Your idea, in your own words",
        description=(
            "The occasion, the stones, a piece you love, a sketch you can describe: "
            f"anything helps. Up to {MESSAGE_MAX_LENGTH:,} characters."
        ),
    )
    consent = BooleanField("I'm happy for ELYSIUM to contact me about this request")
    # "Start from this piece": which piece travels in `piece`; `use_piece` keeps it or not.
    piece = HiddenField()
    use_piece = BooleanField("Start from this piece", default=True)
    # Abuse: when the form was drawn (signed), and a field only robots fill in.
    started = HiddenField()
    homepage = StringField("Leave this empty")

    def request_data(self, piece: StartingPiece | None) -> BespokeRequest:
        return BespokeRequest(
            name=self.name.data or "",
            email=self.email.data or "",
            phone=self.phone.data or "",
            piece_type=self.piece_type.data or "",
            metal=self.metal.data or "",
            budget=self.budget.data or "",
            wanted_by=self.wanted_by.data or "",
            message=self.message.data or "",
            consent=bool(self.consent.data),
            piece=piece if self.use_piece.data else None,
        )
