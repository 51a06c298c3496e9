"""Sign-up, sign-in, sign-out, email confirmation and password reset."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter import RequestLimit
from flask_login import current_user, login_required

from elysium.auth.forms import (
    ConfirmEmailForm,
    ForgotPasswordForm,
    LinkAccountForm,
    LoginForm,
    RegisterForm,
    ResetPasswordForm,
)
from elysium.client_address import client_address
from elysium.errors import seconds_until_reset, wait_message
from elysium.extensions import db, limiter
from elysium.integrations import google
from elysium.models.users import User
from elysium.security import keep_the_address_here
from elysium.services import accounts, oauth_accounts
from elysium.urls import absolute_url
from elysium.web import just_sent, throttle
from elysium.web.commits import committed_with_retry
from elysium.web.sign_in import safe_next, sign_in, sign_out

bp = Blueprint("auth", __name__, url_prefix="/auth")

PENDING_LINK = "google_link"
CHECK_INBOX = "check_inbox"
PENDING_LINK_SECONDS = 600


def _posted_email() -> str:
    return accounts.normalise_email(request.form.get("email", ""))[:254]


def _form_page(template: str, form, status: int, **context: Any) -> Response:
    response = make_response(render_template(template, form=form, **context), status)
    response.headers["Cache-Control"] = "no-store"
    return response


def when_limited(
    template: str, form_class: type, context: Callable[[], dict[str, Any]] = dict
) -> Callable[[RequestLimit], Response]:
    """A 429 that shows the same form, with what was typed (never the password) kept, and
    what else its page shows (``context()``)."""

    def on_breach(request_limit: RequestLimit) -> Response:
        form = form_class()
        form.form_errors.append(wait_message(request_limit))
        response = _form_page(template, form, 429, **context())
        response.headers["Retry-After"] = str(seconds_until_reset(request_limit))
        return response

    return on_breach


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(
    "20/minute",
    methods=["POST"],
    exempt_when=throttle.from_a_known_device,
    on_breach=when_limited("auth/login.html", LoginForm),
)
def login() -> Response:
    """Wrong passwords are throttled per account (``elysium.web.throttle``), the attempts of
    an address (20 a minute) by the route limit."""
    form = LoginForm(next=request.args.get("next", ""))
    if current_user.is_authenticated and request.method == "GET":
        return redirect(safe_next(form.next.data), 303)
    if not form.validate_on_submit():
        return _form_page("auth/login.html", form, 422 if form.is_submitted() else 200)
    attempt = throttle.SignInAttempt(form.email.data)
    if (refusal := attempt.refusal()) is not None:
        form.form_errors.append(refusal.message)
        response = _form_page("auth/login.html", form, 429)
        response.headers["Retry-After"] = str(refusal.retry_after)
        return response
    try:
        user = accounts.authenticate(db.session, form.email.data, form.password.data)
    except accounts.UnverifiedEmailError as unverified:
        # Counted as a wrong password is, as it is answered: a stranger who opened an account
        # with an address would tell by the limit whether it had one already.
        attempt.password_was_wrong()
        db.session.commit()
        form.form_errors.append(unverified.message)
        return _form_page("auth/login.html", form, 422)
    if user is None:
        attempt.password_was_wrong()
        db.session.commit()
        form.form_errors.append(accounts.NOT_SIGNED_IN)
        return _form_page("auth/login.html", form, 422)
    attempt.password_was_right()
    db.session.commit()
    sign_in(user, remember=form.remember.data)
    flash(f"Welcome back, {user.first_name or 'and thank you for returning'}.")
    return redirect(safe_next(form.next.data), 303)


@bp.post("/logout")
@login_required
def logout() -> Response:
    """Signing out ends every session of the account, on every device and server."""
    accounts.end_all_sessions(current_user._get_current_object())
    db.session.commit()
    sign_out()
    flash("You are signed out.")
    return redirect(url_for("shop.home"), 303)


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(
    "5/hour", methods=["POST"], on_breach=when_limited("auth/register.html", RegisterForm)
)
def register() -> Response:
    form = RegisterForm()
    if not form.validate_on_submit():
        return _form_page("auth/register.html", form, 422 if form.is_submitted() else 200)
    registration = accounts.Registration(
        email=form.email.data,
        password=form.password.data,
        first_name=form.first_name.data or "",
        last_name=form.last_name.data or "",
    )
    try:
        # A double click sends the form twice: the second finds the account the first made.
        committed_with_retry(lambda: accounts.register(db.session, registration))
    except accounts.AccountError as error:
        db.session.rollback()
        getattr(form, error.field or "email").errors.append(error.message)
        return _form_page("auth/register.html", form, 422)
    return _to_check_inbox(form.email.data, reset=False)


def _to_check_inbox(email: str, *, reset: bool) -> Response:
    """The address travels in the signed session (``web.just_sent``), never in a URL."""
    just_sent.keep(CHECK_INBOX, {"email": accounts.normalise_email(email)[:254], "reset": reset})
    return redirect(url_for("auth.check_inbox"), 303)


@bp.get("/check-inbox")
def check_inbox() -> Response:
    sent = just_sent.shown(CHECK_INBOX) or {}
    response = make_response(
        render_template(
            "auth/check_inbox.html", email=sent.get("email", ""), reset=bool(sent.get("reset"))
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/confirm/<token>", methods=["GET", "POST"])
def confirm_email(token: str) -> Response:
    """The link in the email opens a page; the password typed there confirms. A GET changes
    nothing, so a mail scanner that follows the link neither confirms the address nor signs
    anyone in; and the link alone never signs anyone in (someone else may have registered the
    address first, with a password of theirs: the owner's password is the newest one)."""
    form = ConfirmEmailForm()
    try:
        user = accounts.user_for_confirm_token(db.session, token)
    except accounts.AccountError as error:
        response = make_response(
            render_template("auth/link_problem.html", message=error.message, sign_in=True), 400
        )
        keep_the_address_here(response)
        return response
    if not form.validate_on_submit():
        return _confirm_page(form, user, 422 if form.is_submitted() else 200)
    attempt = throttle.SignInAttempt(user.email)
    if (refusal := attempt.refusal()) is not None:
        form.form_errors.append(refusal.message)
        response = _confirm_page(form, user, 429)
        response.headers["Retry-After"] = str(refusal.retry_after)
        return response
    try:
        accounts.confirm_email(db.session, token, form.password.data or "")
    except accounts.AccountError as error:
        attempt.password_was_wrong()
        db.session.rollback()
        form.password.errors.append(error.message)
        return _confirm_page(form, user, 422)
    attempt.password_was_right()
    db.session.commit()
    sign_in(user)
    flash("Your email is confirmed. Welcome to ELYSIUM.")
    return redirect(url_for("account.overview"), 303)


def _confirm_page(form: ConfirmEmailForm, user: User, status: int) -> Response:
    response = _form_page("auth/confirm.html", form, status, user=user)
    keep_the_address_here(response)
    return response


@bp.route("/forgot", methods=["GET", "POST"])
@limiter.limit(
    "3/hour",
    key_func=lambda: "reset:" + throttle.digest(_posted_email()),
    methods=["POST"],
    on_breach=when_limited("auth/forgot.html", ForgotPasswordForm),
)
@limiter.limit(
    "20/hour",
    key_func=lambda: "reset-from:" + client_address(),
    methods=["POST"],
    on_breach=when_limited("auth/forgot.html", ForgotPasswordForm),
)
def forgot_password() -> Response:
    """A reset link to the address typed: three an hour per address (its owner is never
    flooded), and twenty an hour from one address on the internet, so a script can't mail
    every account it knows of."""
    form = ForgotPasswordForm()
    if not form.validate_on_submit():
        return _form_page("auth/forgot.html", form, 422 if form.is_submitted() else 200)
    accounts.request_password_reset(db.session, form.email.data)
    db.session.commit()
    return _to_check_inbox(form.email.data, reset=True)


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str) -> Response:
    form = ResetPasswordForm()
    if accounts.user_for_reset_token(db.session, token) is None:
        response = _reset_link_used()
    elif not form.validate_on_submit():
        response = _form_page("auth/reset.html", form, 422 if form.is_submitted() else 200)
    else:
        try:
            user = accounts.reset_password(db.session, token, form.password.data)
        except accounts.LinkUsedError:
            response = _reset_link_used()
        except accounts.AccountError as error:
            form.password.errors.append(error.message)
            response = _form_page("auth/reset.html", form, 422)
        else:
            db.session.commit()
            sign_in(user)
            flash("Your password is changed, and every other session is signed out.")
            response = redirect(url_for("account.overview"), 303)
    keep_the_address_here(response)
    response.headers["Cache-Control"] = "no-store"
    return response


def _reset_link_used() -> Response:
    page = render_template("auth/link_problem.html", message=accounts.RESET_LINK_USED, forgot=True)
    return make_response(page, 400)


@bp.route("/welcome/<token>", methods=["GET", "POST"])
def welcome(token: str) -> Response:
    """A new member of staff chooses a password through the link ``flask create-staff``
    printed (once, within 24 hours), is signed in, and goes on to set up the second factor."""
    form = ResetPasswordForm()
    user = accounts.user_for_welcome_token(db.session, token)
    if user is None:
        response = make_response(
            render_template(
                "auth/link_problem.html",
                message="This link has expired or has already been used: ask for a new one.",
            ),
            400,
        )
    elif not form.validate_on_submit():
        status = 422 if form.is_submitted() else 200
        response = make_response(render_template("auth/welcome.html", form=form, user=user), status)
    else:
        try:
            accounts.welcome_password(db.session, token, form.password.data)
        except accounts.AccountError as error:
            form.password.errors.append(error.message)
            response = make_response(
                render_template("auth/welcome.html", form=form, user=user), 422
            )
        else:
            db.session.commit()
            sign_in(user)
            flash("Your password is set. Next, your authenticator app.")
            response = redirect(url_for("staff.security.second_factor"), 303)
    keep_the_address_here(response)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/google")
@limiter.limit("20/minute")
def google_login() -> Response:
    """Start Google sign-in (a POST, so no other site can start it for the shopper)."""
    if not google.enabled():
        return redirect(url_for("auth.login"), 303)
    session["after_sign_in"] = safe_next(request.form.get("next"))
    try:
        return google.authorize_redirect(absolute_url("auth.google_callback"))
    except google.GoogleSignInError as error:
        current_app.logger.warning("Google sign-in could not start: %s", error)
        return _google_failed(error.message, 503 if error.unavailable else 400)


def _google_failed(message: str, status: int = 400) -> Response:
    """The sign-in page saying why; its password form still leads where the shopper was going."""
    form = LoginForm()
    form.next.data = session.get("after_sign_in", "")
    form.form_errors.append(message)
    return _form_page("auth/login.html", form, status)


@bp.get("/google/callback")
@limiter.limit("20/minute")
def google_callback() -> Response:
    if not google.enabled():
        return redirect(url_for("auth.login"), 303)
    try:
        claims = google.verified_claims()
    except google.GoogleSignInError as error:
        current_app.logger.warning("Google sign-in failed: %s", error)
        return _google_failed(error.message, 503 if error.unavailable else 400)
    try:
        result = committed_with_retry(
            lambda: oauth_accounts.sign_in_with(db.session, google.PROVIDER, claims)
        )
    except accounts.AccountError as error:
        db.session.rollback()
        return _google_failed(error.message)
    if result.outcome is oauth_accounts.Outcome.NEEDS_PASSWORD:
        session[PENDING_LINK] = {
            "sub": claims["sub"],
            "email": claims.get("email"),
            "email_verified": claims.get("email_verified"),
            "at": time.time(),
        }
        return redirect(url_for("auth.google_link"), 303)
    target = session.get("after_sign_in")
    sign_in(result.user)
    return redirect(safe_next(target), 303)


@bp.route("/google/link", methods=["GET", "POST"])
@limiter.limit(
    "5/minute",
    methods=["POST"],
    on_breach=when_limited(
        "auth/link_google.html",
        LinkAccountForm,
        lambda: {"email": (session.get(PENDING_LINK) or {}).get("email", "")},
    ),
)
def google_link() -> Response:
    """An existing password account: its password proves the Google identity may join it."""
    pending = session.get(PENDING_LINK)
    if not pending or time.time() - pending.get("at", 0) > PENDING_LINK_SECONDS:
        session.pop(PENDING_LINK, None)
        return redirect(url_for("auth.login"), 303)
    form = LinkAccountForm()
    if not form.validate_on_submit():
        status = 422 if form.is_submitted() else 200
        return _form_page("auth/link_google.html", form, status, email=pending["email"])
    try:
        user = committed_with_retry(
            lambda: oauth_accounts.link_with_password(
                db.session, google.PROVIDER, pending, form.password.data
            )
        )
    except accounts.AccountError as error:
        db.session.rollback()
        form.password.errors.append(error.message)
        return _form_page("auth/link_google.html", form, 422, email=pending["email"])
    target = session.get("after_sign_in")
    sign_in(user)
    flash("Your Google account is now linked: next time, one click is enough.")
    return redirect(safe_next(target), 303)
