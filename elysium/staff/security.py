"""The staff member's second factor: enrolling an authenticator, the second step, and
recovery codes.

The second step and a new key need the staff role but not the factor itself (see
``staff.routes``); the recovery-codes page is a staff page like any other. The key being
enrolled is read from the account (a GET never writes): ``flask create-staff`` makes it, or
the "new key" button, a POST. The QR code is an SVG drawn by segno as a ``data:`` image, which
the Content-Security-Policy allows (``img-src 'self' data:``).
"""

from __future__ import annotations

import base64

import segno
from flask import (
    Blueprint,
    Response,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length

from elysium.extensions import db
from elysium.models.users import User
from elysium.services import second_factor
from elysium.staff.access import STAFF_HOME, second_factor_required
from elysium.web.forms import strip
from elysium.web.sign_in import safe_next
from elysium.web.staff_session import mark_second_factor_passed, passed_second_factor

bp = Blueprint("security", __name__, url_prefix="/security")


class CodeForm(FlaskForm):
    code = StringField(
        "Code from your authenticator app",
        validators=[
            DataRequired("Enter the code your authenticator app shows."),
            Length(max=40, message="That is longer than any code."),
        ],
        filters=[strip],
    )
    next = HiddenField()


class NextForm(FlaskForm):
    """A button (its CSRF token and where to go afterwards are all it carries)."""

    next = HiddenField()


def _user() -> User:
    return current_user._get_current_object()


def _target(form: CodeForm | NextForm) -> str:
    return safe_next(form.next.data, default=STAFF_HOME)


def _qr_code(uri: str) -> str:
    """The ``otpauth://`` URI as a QR code: an SVG ``data:`` URI with no style attributes."""
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=4, dark="#000", light="#fff")


def _grouped(key: str) -> str:
    """The key in groups of four, easier to copy by hand (authenticators ignore the spaces)."""
    return " ".join(key[start : start + 4] for start in range(0, len(key), 4))


def _page(form: CodeForm, status: int = 200) -> Response:
    user = _user()
    context: dict[str, object] = {"enrolled": second_factor.is_enrolled(user), "key": None}
    if (key := second_factor.key_being_enrolled(user)) is not None:
        context["key"] = _grouped(key)
        context["qr"] = _qr_code(second_factor.provisioning_uri(user, key))
    remaining = second_factor.locked_for(user)
    context["locked"] = second_factor.lock_message(remaining) if remaining else None
    return make_response(
        render_template(
            "staff/security/second_factor.html",
            form=form,
            new_key_form=NextForm(next=form.next.data),
            **context,
        ),
        status,
    )


@bp.route("/second-factor", methods=["GET", "POST"], endpoint="second_factor")
def second_factor_step() -> Response:
    """Enrol (first time) or pass the second step; then on to the staff page asked for."""
    form = CodeForm(next=request.args.get("next", ""))
    if passed_second_factor():
        return redirect(_target(form), 303)
    if not form.validate_on_submit():
        return _page(form, 422 if form.is_submitted() else 200)
    user = _user()
    try:
        if second_factor.is_enrolled(user):
            passed = second_factor.verify(db.session, user, form.code.data or "")
            codes = None
        else:
            codes = second_factor.enrol(db.session, user, form.code.data or "")
    except second_factor.SecondFactorError as error:
        db.session.commit()  # a wrong code counts towards the lock
        if error.retry_after is None:
            form.code.errors.append(error.message)
            return _page(form, 422)
        response = _page(form, 429)  # the page shows the lock
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    db.session.commit()
    mark_second_factor_passed()
    if codes is not None:
        return _recovery_codes_shown(codes, _target(form), enrolled=True)
    if (left := passed.recovery_codes_left) is not None:
        flash(
            f"You used a recovery code: {left} left. Make new ones from the recovery codes page "
            "when you are running low."
        )
    return redirect(_target(form), 303)


@bp.post("/new-key")
def new_key() -> Response:
    """A new key to enrol (the first one, or instead of one that may have been seen)."""
    form = NextForm()
    if second_factor.is_enrolled(_user()):
        return redirect(_target(form), 303)
    if form.validate_on_submit():
        second_factor.start_enrolment(db.session, _user())
        db.session.commit()
    return redirect(url_for("staff.security.second_factor", next=_target(form)), 303)


@bp.get("/recovery-codes")
@second_factor_required
def recovery_codes() -> str:
    """How many recovery codes are left, and a button for ten new ones."""
    left = second_factor.recovery_codes_left(db.session, _user())
    return render_template("staff/security/recovery_codes_left.html", left=left, form=NextForm())


@bp.post("/recovery-codes")
@second_factor_required
def new_recovery_codes() -> Response:
    form = NextForm()
    if not form.validate_on_submit():
        return redirect(url_for("staff.security.recovery_codes"), 303)
    codes = second_factor.replace_recovery_codes(db.session, _user())
    db.session.commit()
    return _recovery_codes_shown(codes, STAFF_HOME, enrolled=False)


def _recovery_codes_shown(codes: list[str], target: str, *, enrolled: bool) -> Response:
    """The codes, this once (the answer to the POST that made them; only hashes are kept)."""
    user = _user()
    text = "\n".join(
        [
            f"ELYSIUM back office: recovery codes for {user.email}",
            "Each code works once, instead of a code from your authenticator app.",
            "",
            *codes,
            "",
        ]
    )
    download = "data:text/plain;charset=utf-8;base64," + base64.b64encode(
        text.encode("utf-8")
    ).decode("ascii")
    return make_response(
        render_template(
            "staff/security/recovery_codes.html",
            codes=codes,
            next=target,
            enrolled=enrolled,
            download=download,
            email=user.email,
        )
    )
