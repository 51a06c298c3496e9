"""Stripe-shaped objects: Checkout Sessions and their line items, payment intents, charges,
refunds, disputes, customers and events, built from checked parameters.

Everything here is a pure function of its arguments (``now`` is passed in): the rules Stripe
applies to the values themselves live here; rules that need the fake's state (does that
customer exist, how much of that charge is left) live in :mod:`.state`.
"""

from __future__ import annotations

import copy as _copy_module
import json
import re
import secrets
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from .errors import StripeError, missing

MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 60 * 60
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()  # noqa: SIM905
)
# Stripe's limits for a payment-mode Checkout Session: line items, and any amount (8 digits).
MAX_LINE_ITEMS = 100
MAX_AMOUNT = 99_999_999
MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "chf": 50}
SYMBOLS = {"gbp": "£", "usd": "$", "eur": "€"}
FALLBACK_EMAIL = "customer@example.com"
_URL = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

#: Customer parameters kept as sent (Stripe's field of the same name).
_CUSTOMER_FIELDS = (
    "address",
    "balance",
    "business_name",
    "description",
    "email",
    "individual_name",
    "invoice_prefix",
    "metadata",
    "name",
    "next_invoice_sequence",
    "phone",
    "preferred_locales",
    "shipping",
    "tax_exempt",
)
#: Customer parameters that name other objects or services the fake does not model.
_CUSTOMER_UNSUPPORTED = (
    "cash_balance",
    "default_source",
    "payment_method",
    "source",
    "tax",
    "tax_id_data",
    "test_clock",
)


def new_id(prefix: str, *, test: bool = True) -> str:
    return f"{prefix}_{'test_' if test else ''}{secrets.token_hex(12)}"


def clone(obj: Any) -> Any:
    """A deep copy: what leaves the store never aliases what stays in it."""
    return _copy_module.deepcopy(obj)


def dump(body: Any) -> bytes:
    return json.dumps(body, indent=2).encode()


def money(amount: int, currency: str) -> str:
    text = f"{amount:,}" if currency in ZERO_DECIMAL else f"{amount / 100:,.2f}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def check_metadata(metadata: Mapping[str, Any], param: str) -> None:
    if len(metadata) > 50:
        raise StripeError(400, "Metadata can have up to 50 keys.", param=param)
    for key, value in metadata.items():
        if len(key) > 40:
            raise StripeError(
                400, "Metadata keys can have up to 40 characters.", param=f"{param}[{key}]"
            )
        if len(str(value)) > 500:
            raise StripeError(
                400, "Metadata values can have up to 500 characters.", param=f"{param}[{key}]"
            )


def check_email(email: str | None, param: str) -> None:
    if email is not None and email != "" and not _EMAIL.match(email):
        raise StripeError(400, f"Invalid email address: {email}", code="email_invalid", param=param)


def event(
    type: str,
    obj: Mapping[str, Any],
    *,
    api_version: str,
    now: int,
    origin: Mapping[str, Any] | None = None,
    previous_attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": clone(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = clone(previous_attributes)
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": now,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": dict(origin) if origin else {"id": None, "idempotency_key": None},
        "type": type,
    }


# ---------------------------------------------------------------------- customers


def customer(values: Mapping[str, Any], now: int) -> dict[str, Any]:
    """A customer from ``POST /v1/customers`` parameters (checked against the library's
    ``CustomerCreateParams``)."""
    _check_customer_values(values)
    created = {
        "id": new_id("cus"),
        "object": "customer",
        "address": None,
        "balance": 0,
        "business_name": None,
        "created": now,
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "individual_name": None,
        "invoice_prefix": secrets.token_hex(4).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }
    update_customer(created, values)
    return created


def update_customer(target: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``POST /v1/customers/{id}`` parameters in place; returns Stripe's
    ``previous_attributes`` (the old value of every field that changed).

    As on Stripe, an empty string unsets a field, metadata keys are merged (an empty value
    removes its key) and ``metadata=""`` removes them all."""
    _check_customer_values(values)
    previous: dict[str, Any] = {}
    for name in _CUSTOMER_FIELDS:
        if name not in values:
            continue
        value = values[name]
        if name == "metadata":
            merged = {} if value == "" else {**target["metadata"], **value}
            new: Any = {key: item for key, item in merged.items() if item != ""}
        elif name == "preferred_locales":
            new = list(value or [])
        elif name == "tax_exempt":
            new = value or "none"
        elif name == "address":
            new = _address(value) if value else None
        elif name == "shipping":
            new = _shipping(value) if value else None
        else:
            new = None if value == "" else value
        if new != target.get(name):
            previous[name] = clone(target.get(name))
            target[name] = new
    if "invoice_settings" in values:
        settings = target["invoice_settings"]
        for name, value in values["invoice_settings"].items():
            if settings.get(name) != value:
                previous.setdefault("invoice_settings", clone(settings))
                settings[name] = None if value == "" else value
    return previous


def _address(value: Mapping[str, Any]) -> dict[str, Any]:
    """Stripe answers with every address field, unset ones as null."""
    fields = ("city", "country", "line1", "line2", "postal_code", "state")
    return {name: value.get(name) or None for name in fields}


def _shipping(value: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "address": _address(value["address"]),
        "name": value["name"],
        "phone": value.get("phone"),
    }


def _check_customer_values(values: Mapping[str, Any]) -> None:
    for name in _CUSTOMER_UNSUPPORTED:
        if name in values:
            raise StripeError(
                400, f"The fake Stripe server does not model customers' {name}.", param=name
            )
    settings = values.get("invoice_settings") or {}
    if settings.get("default_payment_method"):
        raise missing(
            "PaymentMethod",
            settings["default_payment_method"],
            "invoice_settings[default_payment_method]",
            400,
        )
    check_email(values.get("email"), "email")
    if values.get("metadata"):
        check_metadata(values["metadata"], "metadata")


def customer_details(email: str | None, name: str | None = None) -> dict[str, Any]:
    return {
        "address": None,
        "business_name": None,
        "email": email,
        "individual_name": None,
        "name": name,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }


# ---------------------------------------------------------------------- checkout sessions


def check_session_customer_params(values: Mapping[str, Any]) -> None:
    """Parameters that cannot go together with ``customer`` (checked before it is looked up)."""
    if not values.get("customer"):
        return
    for other in ("customer_email", "customer_creation"):
        if other in values:
            raise StripeError(
                400,
                f"You may only specify one of these parameters: customer, {other}.",
                param="customer",
            )


def checkout_session(
    values: Mapping[str, Any],
    *,
    now: int,
    host: str,
    customer: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """A Checkout Session from ``POST /v1/checkout/sessions`` parameters (already checked
    against ``SessionCreateParams``); ``customer`` is the customer it names, if any.

    Returns the session, its line items and the products they created."""
    mode = values.get("mode")
    if mode is None:
        raise StripeError(
            400, "Missing required param: mode.", code="parameter_missing", param="mode"
        )
    if mode != "payment":
        raise StripeError(
            400,
            f"The fake Stripe server supports only mode=payment, not mode={mode}.",
            param="mode",
        )
    ui_mode = values.get("ui_mode", "hosted_page")
    if ui_mode != "hosted_page":
        raise StripeError(
            400,
            f"The fake Stripe server supports only hosted Checkout, not {ui_mode}.",
            param="ui_mode",
        )
    for name in ("success_url", "cancel_url"):
        url = values.get(name)
        if url is not None and not _URL.match(url):
            raise StripeError(400, "Not a valid URL", code="url_invalid", param=name)
    email = values.get("customer_email")
    check_email(email, "customer_email")
    check_metadata(values.get("metadata", {}), "metadata")
    pi_data = values.get("payment_intent_data", {})
    check_metadata(pi_data.get("metadata", {}), "payment_intent_data[metadata]")
    expires_at = values.get("expires_at", now + MAX_EXPIRY_SECONDS)
    if expires_at - now < MIN_EXPIRY_SECONDS:
        raise StripeError(
            400,
            "The `expires_at` timestamp must be at least 30 minutes from Checkout Session "
            "creation.",
            code="parameter_invalid_integer",
            param="expires_at",
        )
    if expires_at - now > MAX_EXPIRY_SECONDS:
        raise StripeError(
            400,
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
            code="parameter_invalid_integer",
            param="expires_at",
        )
    items, products, currency = _line_items(values.get("line_items"), now)
    total = sum(item["amount_total"] for item in items)
    if total > MAX_AMOUNT:
        raise StripeError(
            400,
            f"The Checkout Session's total amount due must be no more than {MAX_AMOUNT}.",
            code="amount_too_large",
            param="line_items",
        )
    minimum = MINIMUM_CHARGE.get(currency)
    if minimum and total < minimum:
        raise StripeError(
            400,
            "The Checkout Session's total amount due must add up to at least "
            f"{money(minimum, currency)}",
            code="amount_too_small",
            param="line_items",
        )
    session_id = new_id("cs")
    methods = values.get("allowed_payment_method_types") or ["card"]
    session = {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": values.get("allow_promotion_codes"),
        "allowed_payment_method_types": values.get("allowed_payment_method_types"),
        "amount_subtotal": total,
        "amount_total": total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": values.get("billing_address_collection"),
        "branding_settings": None,
        "cancel_url": values.get("cancel_url"),
        "client_reference_id": values.get("client_reference_id"),
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": now,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer["id"] if customer else None,
        "customer_account": None,
        "customer_creation": None if customer else values.get("customer_creation", "if_required"),
        "customer_details": (
            customer_details(customer["email"], customer["name"]) if customer else None
        ),
        "customer_email": email,
        "discounts": [],
        "excluded_payment_method_types": values.get("excluded_payment_method_types"),
        "expires_at": expires_at,
        "integration_identifier": values.get("integration_identifier"),
        "invoice": None,
        "invoice_creation": None,
        "livemode": False,
        "locale": values.get("locale"),
        "managed_payments": None,
        "metadata": values.get("metadata", {}),
        "mode": "payment",
        "name_collection": None,
        "optional_items": None,
        "origin_context": values.get("origin_context"),
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": methods,
        "payment_status": "unpaid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "presentment_details": None,
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": values.get("submit_type"),
        "subscription": None,
        "success_url": values.get("success_url"),
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "url": f"{host}/pay/{session_id}",
        "wallet_options": None,
    }
    return session, items, products


def _line_items(
    line_params: list[dict[str, Any]] | None, now: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    if not line_params:
        raise StripeError(
            400,
            "Missing required param: line_items.",
            code="parameter_missing",
            param="line_items",
        )
    if len(line_params) > MAX_LINE_ITEMS:
        raise StripeError(
            400,
            f"Checkout Sessions in payment mode can have at most {MAX_LINE_ITEMS} line items.",
            code="parameter_invalid_integer",
            param="line_items",
        )
    items: list[dict[str, Any]] = []
    products: list[dict[str, Any]] = []
    currency: str | None = None
    for index, line in enumerate(line_params):
        where = f"line_items[{index}]"
        if line.get("price"):
            raise missing("price", line["price"], f"{where}[price]", 400)
        price_data = line.get("price_data")
        if price_data is None:
            raise StripeError(
                400, f"You must specify either `price` or `price_data` in `{where}`.", param=where
            )
        pwhere = f"{where}[price_data]"
        if price_data.get("product"):
            raise missing("product", price_data["product"], f"{pwhere}[product]", 400)
        product_data = price_data.get("product_data")
        if product_data is None:
            raise StripeError(
                400,
                f"You must specify either `product` or `product_data` in `{pwhere}`.",
                param=pwhere,
            )
        item_currency = price_data["currency"].lower()
        if not re.fullmatch(r"[a-z]{3}", item_currency):
            raise StripeError(
                400,
                f"Invalid currency: {price_data['currency']}",
                code="parameter_invalid_string",
                param=f"{pwhere}[currency]",
            )
        if currency is not None and item_currency != currency:
            raise StripeError(
                400, "All line items must have the same currency.", param=f"{pwhere}[currency]"
            )
        currency = item_currency
        has_int = "unit_amount" in price_data
        has_decimal = "unit_amount_decimal" in price_data
        if has_int == has_decimal:
            raise StripeError(
                400,
                "You must specify exactly one of `unit_amount` or `unit_amount_decimal` "
                f"in `{pwhere}`.",
                param=f"{pwhere}[unit_amount]",
            )
        unit = Decimal(price_data["unit_amount"]) if has_int else price_data["unit_amount_decimal"]
        if unit < 0:
            raise StripeError(
                400,
                "This value must be greater than or equal to 0.",
                param=f"{pwhere}[unit_amount]",
            )
        if unit > MAX_AMOUNT:
            raise StripeError(
                400,
                f"This value must be less than or equal to {MAX_AMOUNT}.",
                code="parameter_invalid_integer",
                param=f"{pwhere}[unit_amount]",
            )
        quantity = line.get("quantity")
        if quantity is None:
            raise StripeError(
                400,
                f"Quantity is required. Add `quantity` to `{where}`",
                code="parameter_missing",
                param=f"{where}[quantity]",
            )
        if quantity < 1:
            raise StripeError(
                400, "This value must be greater than or equal to 1.", param=f"{where}[quantity]"
            )
        check_metadata(product_data.get("metadata", {}), f"{pwhere}[product_data][metadata]")
        product = {
            "id": new_id("prod"),
            "object": "product",
            "active": True,
            "created": now,
            "description": product_data.get("description"),
            "images": product_data.get("images", []),
            "livemode": False,
            "metadata": product_data.get("metadata", {}),
            "name": product_data["name"],
            "tax_code": product_data.get("tax_code"),
            "type": "service",
            "unit_label": product_data.get("unit_label"),
            "updated": now,
            "url": None,
        }
        products.append(product)
        amount = int((unit * quantity).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        items.append(
            {
                "id": new_id("li"),
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": item_currency,
                "description": product["name"],
                "metadata": line.get("metadata", {}),
                "price": {
                    "id": new_id("price"),
                    "object": "price",
                    "active": False,
                    "billing_scheme": "per_unit",
                    "created": now,
                    "currency": item_currency,
                    "custom_unit_amount": None,
                    "livemode": False,
                    "lookup_key": None,
                    "metadata": {},
                    "nickname": None,
                    "product": product["id"],
                    "recurring": None,
                    "tax_behavior": price_data.get("tax_behavior", "unspecified"),
                    "tiers_mode": None,
                    "transform_quantity": None,
                    "type": "one_time",
                    "unit_amount": int(unit) if unit == int(unit) else None,
                    "unit_amount_decimal": str(unit),
                },
                "quantity": quantity,
            }
        )
    assert currency is not None
    return items, products, currency


def listed(items: list[dict[str, Any]], url: str, *, has_more: bool) -> dict[str, Any]:
    """A page of a list endpoint (its items already copied out of the fake's state)."""
    return {"object": "list", "data": items, "has_more": has_more, "url": url}


def line_item_list(session_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": clone(items),
        "has_more": False,
        "url": f"/v1/checkout/sessions/{session_id}/line_items",
    }


# ---------------------------------------------------------------------- payments


def payment_intent(
    session: Mapping[str, Any], pi_data: Mapping[str, Any], now: int
) -> dict[str, Any]:
    return {
        "id": new_id("pi"),
        "object": "payment_intent",
        "amount": session["amount_total"],
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": pi_data.get("capture_method", "automatic"),
        "client_secret": None,
        "confirmation_method": "automatic",
        "created": now,
        "currency": session["currency"],
        "customer": session["customer"],
        "description": pi_data.get("description"),
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": dict(pi_data.get("metadata", {})),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_options": {},
        "payment_method_types": list(session["payment_method_types"]),
        "processing": None,
        "receipt_email": pi_data.get("receipt_email"),
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "statement_descriptor": pi_data.get("statement_descriptor"),
        "statement_descriptor_suffix": pi_data.get("statement_descriptor_suffix"),
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
    }


def charge(
    intent: Mapping[str, Any], *, status: str, method: str, email: str, now: int
) -> dict[str, Any]:
    failed = status == "failed"
    return {
        "id": new_id("ch"),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": intent["amount"] if status == "succeeded" else 0,
        "amount_refunded": 0,
        "balance_transaction": None,
        "billing_details": {"address": None, "email": email, "name": None, "phone": None},
        "captured": status == "succeeded",
        "created": now,
        "currency": intent["currency"],
        "customer": intent["customer"],
        "description": intent["description"],
        "disputed": False,
        "failure_code": "card_declined" if failed else None,
        "failure_message": "Your card was declined." if failed else None,
        "livemode": False,
        "metadata": dict(intent["metadata"]),
        "outcome": {
            "network_status": "declined_by_network" if failed else "approved_by_network",
            "reason": "generic_decline" if failed else None,
            "risk_level": "normal",
            "seller_message": "The bank did not return any further details with this decline."
            if failed
            else "Payment complete.",
            "type": "issuer_declined" if failed else "authorized",
        },
        "paid": status == "succeeded",
        "payment_intent": intent["id"],
        "payment_method": new_id("pm"),
        "payment_method_details": {"type": method},
        "receipt_email": intent["receipt_email"],
        "receipt_url": None,
        "refunded": False,
        "status": status,
    }


def payment_error(charge_id: str, *, bank: bool = False) -> dict[str, Any]:
    return {
        "charge": charge_id,
        "code": "payment_method_provider_decline" if bank else "card_declined",
        "decline_code": None if bank else "generic_decline",
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "message": "The bank payment failed." if bank else "Your card was declined.",
        "type": "card_error",
    }


def refund(
    values: Mapping[str, Any], paid: Mapping[str, Any], amount: int, now: int
) -> dict[str, Any]:
    reason = values.get("reason")
    if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
        raise StripeError(
            400,
            "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
            param="reason",
        )
    return {
        "id": new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": paid["id"],
        "created": now,
        "currency": paid["currency"],
        "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "metadata": values.get("metadata", {}),
        "payment_intent": paid["payment_intent"],
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }


def dispute(paid: Mapping[str, Any], *, reason: str, amount: int, now: int) -> dict[str, Any]:
    return {
        "id": new_id("dp"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": paid["id"],
        "created": now,
        "currency": paid["currency"],
        "evidence": {},
        "evidence_details": {
            "due_by": now + 7 * 24 * 3600,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": paid["payment_intent"],
        "reason": reason,
        "status": "needs_response",
    }
