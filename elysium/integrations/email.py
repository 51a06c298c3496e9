"""Sending one email: to the console (development) or through Resend's HTTP API.

Backends know nothing about the outbox table; they get one :class:`OutgoingEmail`, return
the provider's message id, or raise :class:`EmailDeliveryError` saying whether trying again
could help, and when.
"""

from __future__ import annotations

import enum
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests

from elysium.config import ConfigurationError

logger = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 2000
RETRY_AFTER_SECONDS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class OutgoingEmail:
    sender: str
    to: str
    subject: str
    text: str
    html: str
    idempotency_key: str


class Failure(enum.Enum):
    """What a refused or failed send is about, and so what may be tried next."""

    # This try (a timeout, a 5xx): the same email may well go through later.
    TRANSIENT = "transient"
    # This email (a validation error): sending it again would fail the same way.
    PERMANENT = "permanent"
    # The shop, for a while (429: a rate limit or a quota): every email would be turned away
    # until then; this one was not taken.
    THROTTLED = "throttled"
    # The shop, until its settings are fixed (401/403: the API key missing, wrong, revoked or
    # restricted, the sender's domain not verified): every email would be turned away, and
    # this one was not taken.
    UNAUTHORISED = "unauthorised"


class EmailDeliveryError(Exception):
    """The provider did not take the email; ``failure`` says why and ``retry_after`` how long
    the provider asked us to wait (its ``Retry-After``), if it said."""

    def __init__(
        self, message: str, *, failure: Failure, retry_after: timedelta | None = None
    ) -> None:
        super().__init__(message[:MAX_ERROR_LENGTH])
        self.failure = failure
        self.retry_after = retry_after

    @property
    def refuses_the_shop(self) -> bool:
        """The answer is about the shop, not this email: it was not tried."""
        return self.failure in (Failure.THROTTLED, Failure.UNAUTHORISED)


class EmailBackend(Protocol):
    def send(self, email: OutgoingEmail) -> str | None:
        """Deliver ``email``; return the provider's message id (if it gives one)."""
        ...

    def close(self) -> None:
        """Release connections kept open between sends."""
        ...


class ConsoleBackend:
    """Writes each email to stdout (and a one-line note to the log); nothing leaves the machine.

    The stream is looked up at send time so that output capture (pytest, a CLI runner) sees it.
    """

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream

    def send(self, email: OutgoingEmail) -> str | None:
        stream = self._stream or sys.stdout
        rule = "-" * 72
        print(
            f"{rule}\nFrom: {email.sender}\nTo: {email.to}\nSubject: {email.subject}\n"
            f"Idempotency-Key: {email.idempotency_key}\n\n{email.text.rstrip()}\n{rule}",
            file=stream,
            flush=True,
        )
        logger.info("Email %s to %s written to the console", email.idempotency_key, email.to)
        return None

    def close(self) -> None:
        return None


class ResendBackend:
    """``POST /emails`` on Resend (or anything that speaks its API at ``base_url``)."""

    def __init__(self, *, api_key: str, base_url: str, timeout_seconds: float) -> None:
        self._url = base_url.rstrip("/") + "/emails"
        self._timeout = (timeout_seconds, timeout_seconds)
        self._http = requests.Session()
        self._http.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "User-Agent": "elysium-outbox/1",
            }
        )

    def close(self) -> None:
        self._http.close()

    def send(self, email: OutgoingEmail) -> str | None:
        payload = {
            "from": email.sender,
            "to": [email.to],
            "subject": email.subject,
            "html": email.html,
            "text": email.text,
        }
        try:
            response = self._http.post(
                self._url,
                json=payload,
                headers={"Idempotency-Key": email.idempotency_key},
                timeout=self._timeout,
            )
        except requests.Timeout as exc:
            raise EmailDeliveryError(f"Resend timed out: {exc}", failure=Failure.TRANSIENT) from exc
        except requests.RequestException as exc:
            raise EmailDeliveryError(
                f"Resend unreachable: {exc}", failure=Failure.TRANSIENT
            ) from exc

        if response.ok:
            try:
                message_id = response.json()["id"]
            except (ValueError, KeyError, TypeError) as exc:
                # Resend took the email but we cannot read its id; retrying with the same
                # idempotency key returns the same answer rather than a second email.
                raise EmailDeliveryError(
                    f"Resend answered {response.status_code} without an email id",
                    failure=Failure.TRANSIENT,
                ) from exc
            return str(message_id)
        raise _error_from_response(response)


def _error_from_response(response: requests.Response) -> EmailDeliveryError:
    name, message = "", response.text[:500]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        name = str(body.get("name") or "")
        message = str(body.get("message") or message)
    status = response.status_code
    label = f"Resend {status}" + (f" {name}" if name else "")
    return EmailDeliveryError(
        f"{label}: {message}",
        failure=_failure_of(status, name),
        retry_after=_retry_after(response.headers.get("Retry-After", "")),
    )


def _failure_of(status: int, name: str) -> Failure:
    if status == 429:
        return Failure.THROTTLED
    if status in (401, 403):
        return Failure.UNAUTHORISED
    # 409 "concurrent_idempotent_requests": the same key is still being processed; the answer
    # will be ready on the next try. Every other 4xx is a refusal of this email.
    if status >= 500 or (status == 409 and name == "concurrent_idempotent_requests"):
        return Failure.TRANSIENT
    return Failure.PERMANENT


def _retry_after(value: str) -> timedelta | None:
    """The wait a ``Retry-After`` header asks for: a number of seconds or an HTTP date."""
    value = value.strip()
    if not value:
        return None
    if RETRY_AFTER_SECONDS.fullmatch(value):
        return timedelta(seconds=int(value))
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(moment - datetime.now(UTC), timedelta(0))


def backend_from_config(config: Mapping[str, Any]) -> EmailBackend:
    """The backend ``EMAIL_BACKEND`` names, built from the app's settings."""
    kind = config.get("EMAIL_BACKEND", "console")
    if kind == "console":
        return ConsoleBackend()
    if kind == "resend":
        api_key = config.get("RESEND_API_KEY")
        if not api_key:
            raise ConfigurationError("EMAIL_BACKEND is 'resend' but RESEND_API_KEY is not set.")
        return ResendBackend(
            api_key=api_key,
            base_url=config.get("RESEND_BASE_URL") or "https://api.resend.com",
            timeout_seconds=float(config.get("EMAIL_TIMEOUT_SECONDS", 5)),
        )
    raise ConfigurationError(f"EMAIL_BACKEND must be 'console' or 'resend', not {kind!r}.")
