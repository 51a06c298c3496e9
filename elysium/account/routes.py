"""The account area: overview, profile, addresses, and the shopper's own data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_limiter import RequestLimit
from flask_login import current_user, login_required
from flask_wtf import FlaskForm

from elysium.account.forms import (
    ConfirmNewEmailForm,
    DeleteAccountForm,
    EmailForm,
    PasswordForm,
    ProfileForm,
)
from elysium.errors import seconds_until_reset, wait_message
from elysium.extensions import db, limiter
from elysium.htmx import fragments, htmx_redirect, is_htmx, notice, personal_pages, render
from elysium.models.types import utcnow
from elysium.models.users import Address, User
from elysium.security import keep_the_address_here
from elysium.services import account_data, accounts, addresses, bespoke, orders, profiles
from elysium.services.addresses import Added, AddressError, Default
from elysium.services.profiles import ProfileError
from elysium.web.forms import AddressForm
from elysium.web.quotes import account_quotes
from elysium.web.sign_in import sign_in, sign_out
from elysium.web.staff_session import sign_in_details_guarded

bp = Blueprint("account", __name__, url_prefix="/account")


personal_pages(bp)


def _user() -> User:
    return current_user._get_current_object()


def _attach(form: FlaskForm, errors: Mapping[str, str]) -> None:
    """Show service errors beside their fields (``""`` and unknown fields: above the form)."""
    for name, message in errors.items():
        field = form._fields.get(name) if name else None
        if field is None:
            form.form_errors.append(message)
        elif not field.errors:
            field.errors = [*field.errors, message]


def _done(message: str, location: str, *parts: str) -> Response:
    """Success: htmx gets the updated fragments and a notice; a browser is redirected."""
    if is_htmx():
        return fragments(*parts, notice(message))
    flash(message)
    response = redirect(location, 303)
    response.vary.add("HX-Request")
    return response


def _limited(request_limit: RequestLimit) -> Response:
    """A 429 that shows the same form, with what was typed (never a password) kept and the
    wait beside it, as a form that was refused would be."""
    user = _user()
    form: FlaskForm
    if request.endpoint == "account.close_account":
        form = DeleteAccountForm()
        form.form_errors.append(wait_message(request_limit))
        page = render_template("account/delete.html", user=user, form=form)
        response = make_response(page, 429)
    else:
        name, form_class, fragment = LIMITED_FORMS[request.endpoint or ""]
        form = form_class()
        form.form_errors.append(wait_message(request_limit))
        if is_htmx():
            response = fragments(render_template(fragment, user=user, **{name: form}), status=429)
        else:
            response = _profile_page(user, 429, **{name: form})
    response.headers["Retry-After"] = str(seconds_until_reset(request_limit))
    response.vary.add("HX-Request")
    return response


# The profile's forms that are limited: the name the page gives each, its class, its fragment.
LIMITED_FORMS: dict[str, tuple[str, type[FlaskForm], str]] = {
    "account.change_email": ("email_form", EmailForm, "account/_email_form.html"),
    "account.change_password": ("password_form", PasswordForm, "account/_password_form.html"),
}

# The forms that ask for the current password (a new address, a new password, closing the
# account) take 10 tries an hour between them, per account: a session taken from its owner
# can't guess it forever.
current_password_asked = limiter.shared_limit(
    "10/hour",
    scope="current-password",
    key_func=lambda: f"current-password:{current_user.id}",
    methods=["POST"],
    on_breach=_limited,
)


@bp.get("")
@login_required
def overview() -> Response:
    user = _user()
    return make_response(
        render_template(
            "account/overview.html",
            user=user,
            profile=user.profile,
            shipping=addresses.default_address(db.session, user, Default.SHIPPING),
            billing=addresses.default_address(db.session, user, Default.BILLING),
            recent_orders=orders.orders_for_user(db.session, user.id)[:3],
        )
    )


def _profile_form(user: User) -> ProfileForm:
    profile = user.profile
    return ProfileForm(
        formdata=None,
        data={
            "first_name": user.first_name,
            "last_name": user.last_name,
            "phone": user.phone,
            "preferred_metal": (profile and profile.preferred_metal) or "",
            "ring_size": (profile and profile.ring_size) or "",
            "marketing_consent": bool(profile and profile.marketing_consent),
        },
    )


def _profile_page(user: User, status: int = 200, **forms: FlaskForm) -> Response:
    context = {
        "user": user,
        "profile_form": forms.get("profile_form") or _profile_form(user),
        "email_form": forms.get("email_form")
        or EmailForm(formdata=None, data={"email": user.email}),
        "password_form": forms.get("password_form") or PasswordForm(formdata=None),
    }
    return make_response(render_template("account/profile.html", **context), status)


def _invalid(user: User, fragment: str, name: str, form: FlaskForm) -> Response:
    """422: the form again with its messages, as a fragment for htmx or in the whole page."""
    if is_htmx():
        return fragments(render_template(fragment, user=user, **{name: form}), status=422)
    response = _profile_page(user, 422, **{name: form})
    response.vary.add("HX-Request")
    return response


@bp.get("/profile")
@login_required
def profile() -> Response:
    return _profile_page(_user())


@bp.post("/profile")
@login_required
def update_profile() -> Response:
    user = _user()
    form = ProfileForm()
    if form.validate_on_submit():
        try:
            profiles.update_profile(db.session, user, form.changes())
        except ProfileError as error:
            db.session.rollback()
            _attach(form, error.errors)
        else:
            db.session.commit()
            return _done(
                "Your details are saved.",
                url_for("account.profile"),
                render_template(
                    "account/_profile_form.html", user=user, profile_form=_profile_form(user)
                ),
            )
    return _invalid(user, "account/_profile_form.html", "profile_form", form)


@bp.post("/email")
@login_required
@sign_in_details_guarded
@limiter.limit(
    # The account's id, not its session's (``get_id`` changes at each sign-in).
    "5/hour",
    key_func=lambda: f"email-change:{current_user.id}",
    on_breach=_limited,
)
@current_password_asked
def change_email() -> Response:
    """Each request writes to the address typed (a link, or a note that someone tried, the
    same answer either way): a few an hour per account, so the form can't send mail to a list
    of addresses."""
    user = _user()
    form = EmailForm()
    if form.validate_on_submit():
        try:
            sent_to = accounts.request_email_change(
                db.session, user, form.current_password.data, form.email.data
            )
        except accounts.AccountError as error:
            db.session.rollback()
            _attach(form, {error.field or "": error.message})
        else:
            db.session.commit()
            fresh = EmailForm(formdata=None, data={"email": user.email})
            return _done(
                f"We've sent a link to {sent_to}: your email changes when you open it."
                if sent_to
                else f"{user.email} is already your email.",
                url_for("account.profile"),
                render_template("account/_email_form.html", user=user, email_form=fresh),
            )
    return _invalid(user, "account/_email_form.html", "email_form", form)


@bp.route("/email/confirm/<token>", methods=["GET", "POST"])
def confirm_new_email(token: str) -> Response:
    """The link sent to the new address opens a page; its button makes the change. A GET
    changes nothing, so a mail scanner that follows the link moves no account.

    Anyone holding the link may press the button: the link itself proves the new address, and
    the password was given when it was asked for. The browser doing it stays signed in if it
    is the account's; every other session of the account ends.
    """
    form = ConfirmNewEmailForm()
    try:
        if form.validate_on_submit():
            # Who is signed in must be read before the change ends the account's sessions.
            signed_in_as = current_user.id if current_user.is_authenticated else None
            change = accounts.confirm_email_change(db.session, token)
        else:
            change = accounts.email_change_for_token(db.session, token)
            response = make_response(
                render_template("account/confirm_new_email.html", form=form, change=change)
            )
            keep_the_address_here(response)
            return response
    except accounts.AccountError as error:
        db.session.rollback()
        response = make_response(
            render_template("account/email_link_problem.html", message=error.message), 400
        )
        keep_the_address_here(response)
        return response
    db.session.commit()
    user = change.user
    if signed_in_as == user.id:
        _stay_signed_in(user)
        flash(f"Your email is now {user.email}, and every other session is signed out.")
        return redirect(url_for("account.profile"), 303)
    flash(f"Your email is now {user.email}. Please sign in with it.")
    return redirect(url_for("auth.login"), 303)


def _stay_signed_in(user: User) -> None:
    """After a password or email change every session ends; this browser starts a fresh one
    (which keeps its CSRF secret: ``sign_in``), so the forms on the page still work."""
    remember_cookie = current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
    sign_in(user, remember=remember_cookie in request.cookies)


@bp.post("/password")
@login_required
@sign_in_details_guarded
@current_password_asked
def change_password() -> Response:
    user = _user()
    form = PasswordForm()
    if form.validate_on_submit():
        try:
            accounts.change_password(
                db.session, user, form.current_password.data, form.password.data
            )
        except accounts.AccountError as error:
            db.session.rollback()
            _attach(form, {error.field or "": error.message})
        else:
            db.session.commit()
            _stay_signed_in(user)
            return _done(
                "Your password is changed, and every other session is signed out.",
                url_for("account.profile"),
                render_template(
                    "account/_password_form.html",
                    user=user,
                    password_form=PasswordForm(formdata=None),
                ),
            )
    return _invalid(user, "account/_password_form.html", "password_form", form)


def _owned(address_id: int) -> Address:
    """The signed-in shopper's address; anyone else's is not found (404, never 403)."""
    address = addresses.address_of(db.session, _user(), address_id)
    if address is None:
        abort(404)
    return address


def _new_address_form(user: User) -> AddressForm:
    first = not addresses.addresses_of(db.session, user)
    return AddressForm(
        formdata=None, data={"default_shipping": first, "default_billing": first}, id_prefix="new"
    )


def _addresses_page(user: User, form: AddressForm, status: int = 200) -> Response:
    response = make_response(
        render_template(
            "account/addresses.html",
            addresses=addresses.addresses_of(db.session, user),
            form=form,
        ),
        status,
    )
    response.vary.add("HX-Request")
    return response


def _card(address: Address, oob: str | None = None) -> str:
    return render_template("account/_address_card.html", address=address, oob=oob)


def _cards(changed: Iterable[Address]) -> list[str]:
    return [_card(address, oob="true") for address in changed]


def _checked(form: AddressForm) -> bool:
    """The form's own checks and the address rules together, so every message shows at once."""
    valid = form.validate_on_submit()
    try:
        addresses.clean(form.address())
    except AddressError as error:
        _attach(form, error.errors)
        return False
    return valid


@bp.get("/addresses")
@login_required
def address_book() -> Response:
    user = _user()
    return _addresses_page(user, _new_address_form(user))


@bp.post("/addresses")
@login_required
def add_address() -> Response:
    user = _user()
    form = AddressForm(id_prefix="new")
    if _checked(form):
        defaults = frozenset(
            kind
            for kind, chosen in (
                (Default.SHIPPING, form.default_shipping.data),
                (Default.BILLING, form.default_billing.data),
            )
            if chosen
        )
        try:
            address, replaced, added = addresses.add_address(
                db.session, user, form.address(), defaults
            )
        except AddressError as error:
            db.session.rollback()
            _attach(form, error.errors)
        else:
            db.session.commit()
            new = added is Added.NEW
            # Already listed, its card is redrawn where it is only for a default it became (an
            # edit of it open there, under the same id, is left alone otherwise).
            cards = [_card(address, oob="beforeend:#address-list")] if new else []
            return _done(
                "Address added." if new else "That address is already in your address book.",
                url_for("account.address_book"),
                render_template("account/_address_form.html", form=_new_address_form(user)),
                *cards,
                *_cards([address] if added is Added.NOW_A_DEFAULT else []),
                *_cards(replaced),
            )
    if is_htmx():
        return _address_refused(form)
    return _addresses_page(user, form, 422)


ADDRESS_REFUSED = "The address was not saved: please correct the fields marked."


def _address_refused(form: AddressForm, address: Address | None = None) -> Response:
    """422 for htmx: the form (a new address, or ``address`` being edited) with its messages,
    and the live region saying it was not saved (focus goes to the first field marked)."""
    return fragments(
        render_template("account/_address_form.html", form=form, address=address),
        notice(ADDRESS_REFUSED, error=True),
        status=422,
    )


@bp.get("/addresses/<int:address_id>")
@login_required
def address(address_id: int) -> Response:
    """One card: what "cancel" brings back in place of the edit form."""
    card = _owned(address_id)
    if is_htmx():
        return fragments(_card(card))
    return redirect(url_for("account.address_book"), 303)


@bp.get("/addresses/<int:address_id>/edit")
@login_required
def edit_address(address_id: int) -> Response:
    address = _owned(address_id)
    form = AddressForm(formdata=None, obj=address, id_prefix=f"address-{address.id}")
    return render(
        "account/address_edit.html", "account/_address_form.html", form=form, address=address
    )


@bp.post("/addresses/<int:address_id>")
@login_required
def update_address(address_id: int) -> Response:
    address = _owned(address_id)
    form = AddressForm(id_prefix=f"address-{address.id}")
    if _checked(form):
        addresses.update_address(db.session, address, form.address())
        db.session.commit()
        return _done("Address saved.", url_for("account.address_book"), _card(address))
    if is_htmx():
        return _address_refused(form, address)
    return render(
        "account/address_edit.html",
        "account/_address_form.html",
        status=422,
        form=form,
        address=address,
    )


@bp.post("/addresses/<int:address_id>/delete")
@login_required
def delete_address(address_id: int) -> Response:
    addresses.delete_address(db.session, _owned(address_id))
    db.session.commit()
    # For htmx the body is only the notice, so the card it replaces simply goes away.
    return _done("Address deleted.", url_for("account.address_book"))


@bp.post("/addresses/<int:address_id>/default/<any(shipping, billing):kind>")
@login_required
def make_default(address_id: int, kind: str) -> Response:
    address = _owned(address_id)
    replaced = addresses.make_default(db.session, _user(), address, Default(kind))
    db.session.commit()
    return _done(
        f"This is now your default {kind} address.",
        url_for("account.address_book"),
        _card(address),
        *_cards(replaced),
    )


@bp.route("/delete", methods=["GET", "POST"])
@login_required
@current_password_asked
def close_account() -> Response:
    user = _user()
    form = DeleteAccountForm()
    if form.validate_on_submit():
        stripe_customer_id = user.stripe_customer_id
        try:
            account_data.close_account(
                db.session,
                user,
                password=form.password.data or "",
                typed_email=form.confirm_email.data or "",
            )
        except accounts.AccountError as error:
            db.session.rollback()
            _attach(form, {error.field or "": error.message})
        else:
            db.session.commit()
            account_data.forget_at_stripe(stripe_customer_id)
            sign_out()
            goodbye = url_for("account.goodbye")
            return htmx_redirect(goodbye) if is_htmx() else redirect(goodbye, 303)
    status = 422 if form.is_submitted() else 200
    return make_response(render_template("account/delete.html", user=user, form=form), status)


@bp.get("/goodbye")
def goodbye() -> str:
    return render_template("account/goodbye.html")


@bp.get("/export")
@login_required
def export() -> Response:
    data = account_data.export(db.session, _user())
    response = make_response(json.dumps(data, indent=2, ensure_ascii=False))
    response.mimetype = "application/json"
    filename = f"elysium-account-{utcnow():%Y-%m-%d}.json"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get("/orders")
@login_required
def orders_list() -> Response:
    return make_response(
        render_template(
            "account/orders.html",
            user=_user(),
            orders=orders.orders_for_user(db.session, _user().id),
        )
    )


@bp.get("/orders/<number>")
@login_required
def order_detail(number: str) -> Response:
    order = orders.order_for_user(db.session, _user().id, number) or abort(404)
    return make_response(render_template("account/order.html", user=_user(), order=order))


@bp.get("/commissions")
@login_required
def commissions() -> Response:
    """The shopper's bespoke requests and where each stands."""
    own = bespoke.leads_of(db.session, _user().id)
    shown = account_quotes(own)
    return make_response(
        render_template(
            "account/commissions.html",
            user=_user(),
            commissions=[(lead, bespoke.labels(lead), shown[lead.id]) for lead in own],
        )
    )
