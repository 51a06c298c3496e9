"""Money is an integer number of minor units plus an ISO 4217 code; never a float."""

from __future__ import annotations

import re

CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$", "CHF": "CHF "}
MINOR_UNITS = 100


def format_money(amount: int, currency: str) -> str:
    """``185000, "GBP"`` -> ``£1,850``; pence are shown only when there are some."""
    symbol = CURRENCY_SYMBOLS.get(currency, currency + " ")
    sign = "\u2212" if amount < 0 else ""
    major, minor = divmod(abs(amount), MINOR_UNITS)
    text = f"{major:,}" if minor == 0 else f"{major:,}.{minor:02d}"
    return f"{sign}{symbol}{text}"


def decimal_string(amount: int) -> str:
    """``185000`` -> ``"1850.00"``, for machine-readable prices (JSON-LD, payment APIs)."""
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), MINOR_UNITS)
    return f"{sign}{major}.{minor:02d}"


# ASCII digits only, as every number the shop reads: int() takes other scripts' digits too.
AMOUNT = re.compile(r"(\d{1,9})(?:\.(\d{1,2}))?", re.ASCII)
# Commas only between thousands: "1,000,00" (meant 1,000.00) or "12,50" is no amount, not a
# hundred times one.
GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?", re.ASCII)


def parse_amount(text: str, currency: str) -> int | None:
    """What a person types for an amount (``"250"``, ``"1,250.50"``, ``"£99.5"``) in minor
    units, or None if it isn't one. Never goes through a float."""
    cleaned = (text or "").strip().replace(" ", "")
    symbol = CURRENCY_SYMBOLS.get(currency, "").strip()
    if symbol and cleaned.startswith(symbol):
        cleaned = cleaned[len(symbol) :]
    if "," in cleaned:
        if not GROUPED.fullmatch(cleaned):
            return None
        cleaned = cleaned.replace(",", "")
    match = AMOUNT.fullmatch(cleaned)
    if match is None:
        return None
    major, minor = match.group(1), (match.group(2) or "0").ljust(2, "0")
    return int(major) * MINOR_UNITS + int(minor)
