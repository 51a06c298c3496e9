"""Sign-up, sign-in and password forms. The rules live in the accounts service; these read input."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from elysium.web.forms import EMAIL_RULES, strip


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=EMAIL_RULES, filters=[strip])
    password = PasswordField("Password", validators=[DataRequired("Enter your password.")])
    remember = BooleanField("Keep me signed in for 30 days")
    next = HiddenField()


class RegisterForm(FlaskForm):
    first_name = StringField("First name", validators=[Length(max=100)])
    last_name = StringField("Last name", validators=[Length(max=100)])
    email = EmailField("Email", validators=EMAIL_RULES, filters=[strip])
    password = PasswordField(
        "Password",
        validators=[DataRequired("Choose a password.")],
        description="At least 10 characters. A few unrelated words make a strong one.",
    )


class ForgotPasswordForm(FlaskForm):
    email = EmailField("Email", validators=EMAIL_RULES, filters=[strip])


class ResetPasswordForm(FlaskForm):
    password = PasswordField(
        "New password",
        validators=[DataRequired("Choose a new password.")],
        description="At least 10 characters.",
    )


class LinkAccountForm(FlaskForm):
    password = PasswordField(
        "Your ELYSIUM password", validators=[DataRequired("Enter your password.")]
    )


class ConfirmEmailForm(FlaskForm):
    """The confirmation page: the password the account was opened with confirms it (the
    link proves the address, the password that the registration was the shopper's)."""

    password = PasswordField(
        "Your password", validators=[DataRequired("Enter the password you chose.")]
    )
