"""Countries we deliver to (ISO 3166-1 alpha-2, English names) and their postcode formats.

Where a country's format is listed, a postcode is required and is stored in its usual
written form (``sw1a1aa`` becomes ``SW1A 1AA``). Elsewhere a postcode is optional free text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

POSTCODE_MAX_LENGTH = 20

_COUNTRIES = {
    "AE": "United Arab Emirates",
    "AT": "Austria",
    "AU": "Australia",
    "BE": "Belgium",
    "BR": "Brazil",
    "CA": "Canada",
    "CH": "Switzerland",
    "CN": "China",
    "CZ": "Czechia",
    "DE": "Germany",
    "DK": "Denmark",
    "ES": "Spain",
    "FI": "Finland",
    "FR": "France",
    "GB": "United Kingdom",
    "GR": "Greece",
    "HK": "Hong Kong",
    "IE": "Ireland",
    "IL": "Israel",
    "IN": "India",
    "IT": "Italy",
    "JP": "Japan",
    "KR": "South Korea",
    "LU": "Luxembourg",
    "MC": "Monaco",
    "MX": "Mexico",
    "NL": "Netherlands",
    "NO": "Norway",
    "NZ": "New Zealand",
    "PL": "Poland",
    "PT": "Portugal",
    "QA": "Qatar",
    "SA": "Saudi Arabia",
    "SE": "Sweden",
    "SG": "Singapore",
    "US": "United States",
    "ZA": "South Africa",
}

# The home market first, then the rest alphabetically by name.
COUNTRIES: tuple[tuple[str, str], ...] = (
    ("GB", _COUNTRIES["GB"]),
    *sorted(
        ((code, name) for code, name in _COUNTRIES.items() if code != "GB"),
        key=lambda item: item[1],
    ),
)
DEFAULT_COUNTRY = "GB"


def country_name(code: str) -> str:
    return _COUNTRIES.get(code, code)


def is_country(code: str) -> bool:
    return code in _COUNTRIES


def typed_as_ascii(value: str) -> str:
    """``value`` with full-width letters and signs (NFKC) and every script's decimal digits
    (Arabic-Indic, Devanagari...) as the ASCII ones they stand for, as a keyboard set to
    another script types them: a postcode or a phone number as couriers, their systems and
    the house read it."""
    return "".join(
        str(digit) if (digit := unicodedata.decimal(char, None)) is not None else char
        for char in unicodedata.normalize("NFKC", value)
    )


def _compact(value: str) -> str:
    return re.sub(r"[\s-]+", "", value.upper())


def _space_before(last: int) -> Callable[[str], str]:
    """Written with one space before the last ``last`` characters (GB, CA, IE, NL, SE...)."""

    def normalise(value: str) -> str:
        compact = _compact(value)
        return f"{compact[:-last]} {compact[-last:]}" if len(compact) > last else compact

    return normalise


def _hyphen_after(first: int) -> Callable[[str], str]:
    """Written with a hyphen after the first ``first`` digits (PL, PT, JP, BR)."""

    def normalise(value: str) -> str:
        compact = _compact(value)
        return f"{compact[:first]}-{compact[first:]}" if len(compact) > first else compact

    return normalise


def _digits_only(value: str) -> str:
    return _compact(value)


def _us_zip(value: str) -> str:
    compact = _compact(value)
    return f"{compact[:5]}-{compact[5:]}" if len(compact) == 9 else compact


@dataclass(frozen=True)
class PostcodeFormat:
    pattern: re.Pattern[str]
    example: str
    normalise: Callable[[str], str]
    label: str = "postcode"


def _format(
    pattern: str, example: str, normalise: Callable[[str], str], label: str = "postcode"
) -> PostcodeFormat:
    # ASCII: ``\d`` would take any script's digits, and ``[A-Z]`` after ``re.IGNORECASE`` more.
    return PostcodeFormat(re.compile(pattern, re.ASCII), example, normalise, label)


_FOUR_DIGITS = _format(r"\d{4}", "1234", _digits_only)
_FIVE_DIGITS = _format(r"\d{5}", "12345", _digits_only)
_SIX_DIGITS = _format(r"\d{6}", "123456", _digits_only)

POSTCODE_FORMATS: dict[str, PostcodeFormat] = {
    "GB": _format(r"GIR 0AA|[A-Z]{1,2}\d[A-Z\d]? \d[A-Z]{2}", "SW1A 1AA", _space_before(3)),
    "US": _format(r"\d{5}(-\d{4})?", "94105 or 94105-1234", _us_zip, "ZIP code"),
    "CA": _format(
        r"[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] \d[ABCEGHJ-NPRSTV-Z]\d",
        "K1A 0B1",
        _space_before(3),
        "postal code",
    ),
    "IE": _format(
        r"([AC-FHKNPRTV-Y]\d{2}|D6W) [\dAC-FHKNPRTV-Y]{4}", "D02 X285", _space_before(4), "Eircode"
    ),
    "NL": _format(r"[1-9]\d{3} [A-Z]{2}", "1012 AB", _space_before(2)),
    "DE": _FIVE_DIGITS,
    "FR": _FIVE_DIGITS,
    "IT": _FIVE_DIGITS,
    "ES": _FIVE_DIGITS,
    "FI": _FIVE_DIGITS,
    "MX": _FIVE_DIGITS,
    "KR": _FIVE_DIGITS,
    "SA": _FIVE_DIGITS,
    "MC": _format(r"980\d{2}", "98000", _digits_only),
    "AU": _FOUR_DIGITS,
    "AT": _FOUR_DIGITS,
    "BE": _FOUR_DIGITS,
    "CH": _FOUR_DIGITS,
    "DK": _FOUR_DIGITS,
    "LU": _format(r"\d{4}", "1234", lambda value: _compact(value).removeprefix("L")),
    "NO": _FOUR_DIGITS,
    "NZ": _FOUR_DIGITS,
    "ZA": _FOUR_DIGITS,
    "SE": _format(r"\d{3} \d{2}", "114 55", _space_before(2)),
    "CZ": _format(r"\d{3} \d{2}", "110 00", _space_before(2)),
    "GR": _format(r"\d{3} \d{2}", "105 57", _space_before(2)),
    "PL": _format(r"\d{2}-\d{3}", "00-950", _hyphen_after(2)),
    "PT": _format(r"\d{4}-\d{3}", "1100-148", _hyphen_after(4)),
    "JP": _format(r"\d{3}-\d{4}", "100-0001", _hyphen_after(3)),
    "BR": _format(r"\d{5}-\d{3}", "01310-100", _hyphen_after(5), "CEP"),
    "IN": _format(r"[1-9]\d{5}", "110001", _digits_only, "PIN code"),
    "SG": _SIX_DIGITS,
    "CN": _SIX_DIGITS,
    "IL": _format(r"\d{7}", "6100000", _digits_only),
}


class PostcodeError(ValueError):
    """The postcode is missing or not in the country's format; the message says how to fix it."""


def postcode_label(country: str) -> str:
    rule = POSTCODE_FORMATS.get(country)
    return rule.label if rule else "postcode"


def normalise_postcode(country: str, value: str) -> str:
    """The postcode in its usual written form; raises :class:`PostcodeError` if it can't be.
    Full-width letters and other scripts' digits are read as the ASCII ones they stand for."""
    value = " ".join(typed_as_ascii(value).split())
    rule = POSTCODE_FORMATS.get(country)
    if rule is None:
        if len(value) > POSTCODE_MAX_LENGTH:
            raise PostcodeError(f"Use at most {POSTCODE_MAX_LENGTH} characters.")
        return value
    if not value:
        raise PostcodeError(f"Enter the {rule.label}.")
    written = rule.normalise(value)
    if not rule.pattern.fullmatch(written):
        raise PostcodeError(f"Enter a {rule.label} like {rule.example}.")
    return written
