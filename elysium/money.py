"""Money is an integer number of minor units plus an ISO 4217 code; never a float."""

from __future__ import annotations

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
