"""Stripe's error shape, shared by the API, the object builders and the test hooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .params import ParamError


class StripeError(Exception):
    """An answer in Stripe's error shape: ``{"error": {type, code, message, param}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        extra: Mapping[str, Any] | None = None,
        save: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type, "message": message}
        if code:
            self.body["code"] = code
            self.body["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            self.body["param"] = param
        self.body.update(extra or {})
        # Like Stripe, keep no idempotent result for a request that never started executing.
        self.save = save


def missing(kind: str, object_id: str, param: str = "id", status: int = 404) -> StripeError:
    """``No such <kind>``: 404 for the object in the URL, 400 for one named in a parameter."""
    return StripeError(
        status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
    )


def from_param_error(exc: ParamError) -> StripeError:
    return StripeError(400, exc.message, code=exc.code, param=exc.param, save=False)
