"""Stripe's form encoding, read back and checked against stripe-python's own parameter types.

Stripe's v1 API takes ``application/x-www-form-urlencoded`` bodies (and query strings) whose
nested values use brackets: ``line_items[0][price_data][product_data][name]=Ring``. The fake
parses them into nested dicts, then walks the ``TypedDict`` that stripe-python declares for
the endpoint (``stripe.params.checkout.SessionCreateParams`` and friends) so that any name the
real library does not know is refused, as Stripe refuses it, with ``param`` set to its full
bracketed path.
"""

from __future__ import annotations

import difflib
import sys
import types
import typing
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

import typing_extensions
from stripe import RequestOptions, StripeObject

# Request options (api_key, idempotency_key, ...) travel as headers, never as parameters.
_REQUEST_OPTION_KEYS = frozenset(RequestOptions.__annotations__)
_APPEND = "\x00append"


class ParamError(Exception):
    """A parameter Stripe would refuse before the endpoint starts executing (so, like Stripe,
    the fake saves no idempotent result for it)."""

    def __init__(self, message: str, param: str | None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``a[b][0][c]=v`` pairs into nested dicts (list indexes stay string keys until the
    schema says the value is a list; ``a[]=x`` appends)."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        parts = _split_key(raw_key)
        node: Any = root
        path = parts[0]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "":
                part = _APPEND + str(sum(1 for k in node if k.startswith(_APPEND)))
            if last:
                if isinstance(node.get(part), dict):
                    raise ParamError(f"Invalid value for {path}: expected an object.", path)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ParamError(f"Invalid value for {path}: expected a string.", path)
                node = child
                path = f"{path}[{parts[index + 1]}]"
    return root


def _split_key(raw_key: str) -> list[str]:
    if "[" not in raw_key:
        return [raw_key]
    head, _, rest = raw_key.partition("[")
    parts = [head]
    while rest:
        inner, sep, rest = rest.partition("]")
        if not sep:
            raise ParamError(f"Invalid parameter name: {raw_key}", raw_key)
        parts.append(inner)
        if rest.startswith("["):
            rest = rest[1:]
        elif rest:
            raise ParamError(f"Invalid parameter name: {raw_key}", raw_key)
    return parts


@cache
def _fields(typed_dict: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A TypedDict's resolved field types and required keys, request options left out.

    ``typing.get_type_hints`` cannot evaluate the whole class (RequestOptions' annotations
    name types imported only under TYPE_CHECKING), so the fields are evaluated on a shim
    class carrying only the parameter annotations, in the TypedDict's own module."""
    annotations = {
        key: value
        for key, value in typed_dict.__annotations__.items()
        if key not in _REQUEST_OPTION_KEYS
    }
    shim = type(
        "_Fields", (), {"__annotations__": annotations, "__module__": typed_dict.__module__}
    )
    hints = typing.get_type_hints(shim, globalns=vars(sys.modules[typed_dict.__module__]))
    required = frozenset(typed_dict.__required_keys__) - _REQUEST_OPTION_KEYS
    return hints, required


def validate(schema: Any, value: Any, param: str = "") -> Any:
    """Check ``value`` (from :func:`parse_form`) against a stripe-python params type and return
    it with Stripe's types (ints, bools, lists). Raises :class:`ParamError`."""
    return _check(schema, value, param)


def known_fields(typed_dict: type) -> frozenset[str]:
    return frozenset(_fields(typed_dict)[0])


def _join(param: str, key: str) -> str:
    return f"{param}[{key}]" if param else key


def _check(tp: Any, value: Any, param: str) -> Any:
    origin = typing.get_origin(tp)
    if typing_extensions.is_typeddict(tp):
        return _check_object(tp, value, param)
    if origin in (typing.Union, types.UnionType):
        return _check_union(typing.get_args(tp), value, param)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        items = _as_list(value, param)
        return [_check(item_type, item, f"{param}[{index}]") for index, item in enumerate(items)]
    if origin is dict or _is_stripe_object(tp):
        args = typing.get_args(tp)
        item_type = args[1] if origin is dict and len(args) == 2 else str
        if value == "":
            return {}
        if not isinstance(value, dict):
            raise ParamError(f"Invalid object: {param} must be a hash of key-value pairs.", param)
        return {key: _check(item_type, item, _join(param, key)) for key, item in value.items()}
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, str) and value in {str(choice) for choice in allowed}:
            return value
        choices = ", ".join(str(choice) or '""' for choice in allowed)
        raise ParamError(f"Invalid {param}: must be one of {choices}", param)
    if isinstance(value, dict):
        raise ParamError(
            f"Invalid {_type_name(tp)}: {param} must be a {_type_name(tp)}, not a hash.",
            param,
            f"parameter_invalid_{_type_name(tp)}",
        )
    if tp is bool:
        if value in ("true", "false"):
            return value == "true"
        raise ParamError(f"Invalid boolean: {value}", param, "parameter_invalid_boolean")
    if tp is int:
        try:
            return int(value)
        except ValueError:
            raise ParamError(
                f"Invalid integer: {value}", param, "parameter_invalid_integer"
            ) from None
    if tp in (float, Decimal):
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ParamError(
                f"Invalid decimal: {value}", param, "parameter_invalid_decimal"
            ) from None
        return float(number) if tp is float else number
    if tp is str or tp is Any:
        return value
    return value  # a type the fake does not know how to check: pass it through as sent


def _is_stripe_object(tp: Any) -> bool:
    """``UntypedStripeObject[str]`` and the like: what the library types metadata as (a
    ``StripeObject`` subclass, which is public, unlike the generic itself)."""
    cls = typing.get_origin(tp) or tp
    return isinstance(cls, type) and issubclass(cls, StripeObject)


def _type_name(tp: Any) -> str:
    return {bool: "boolean", int: "integer", float: "decimal", Decimal: "decimal"}.get(tp, "string")


def _check_object(typed_dict: type, value: Any, param: str) -> dict[str, Any]:
    if value == "" and param:
        return {}
    if not isinstance(value, dict):
        raise ParamError(f"Invalid object: {param} must be a hash.", param, "parameter_invalid")
    fields, required = _fields(typed_dict)
    result: dict[str, Any] = {}
    for key, item in value.items():
        path = _join(param, key)
        if key not in fields:
            message = f"Received unknown parameter: {path}"
            close = difflib.get_close_matches(key, list(fields), n=1)
            if close:
                message += f". Did you mean {close[0]}?"
            raise ParamError(message, path, "parameter_unknown")
        result[key] = _check(fields[key], item, path)
    for key in sorted(required - set(value)):
        path = _join(param, key)
        raise ParamError(f"Missing required param: {path}.", path, "parameter_missing")
    return result


def _as_list(value: Any, param: str) -> list[Any]:
    if value == "":
        return []
    if isinstance(value, dict):
        if all(key.startswith(_APPEND) for key in value):
            return [value[key] for key in sorted(value, key=lambda k: int(k[len(_APPEND) :]))]
        if all(key.isdigit() for key in value):
            return [value[key] for key in sorted(value, key=int)]
    raise ParamError(
        f"Invalid array: {param} must be an array, sent as {param}[0]=...",
        param,
        "parameter_invalid",
    )


def _check_union(alternatives: tuple[Any, ...], value: Any, param: str) -> Any:
    def shape(tp: Any) -> int:
        origin = typing.get_origin(tp)
        container = (
            typing_extensions.is_typeddict(tp) or origin in (list, dict) or _is_stripe_object(tp)
        )
        # Containers first for hashes, scalars first for strings.
        return 0 if container == isinstance(value, dict) else 1

    first_error: ParamError | None = None
    for alternative in sorted(alternatives, key=shape):
        try:
            return _check(alternative, value, param)
        except ParamError as error:
            first_error = first_error or error
    assert first_error is not None
    raise first_error
