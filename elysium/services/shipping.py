"""The couriers the house ships with, and the tracking link each builds from a number."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Carrier:
    code: str
    name: str
    tracking_url: str  # with {number}

    def tracking_link(self, number: str) -> str:
        return self.tracking_url.format(number=quote(number, safe=""))


CARRIERS: dict[str, Carrier] = {
    carrier.code: carrier
    for carrier in (
        Carrier(
            "royal-mail",
            "Royal Mail Special Delivery",
            "https://www.royalmail.com/track-your-item#/tracking-results/{number}",
        ),
        Carrier(
            "dhl",
            "DHL Express",
            "https://www.dhl.com/gb-en/home/tracking.html?tracking-id={number}",
        ),
        Carrier("fedex", "FedEx", "https://www.fedex.com/fedextrack/?trknbr={number}"),
        Carrier("ups", "UPS", "https://www.ups.com/track?tracknum={number}"),
        Carrier(
            "brinks",
            "Brink's Global Services",
            "https://www.brinksglobal.com/tracking?number={number}",
        ),
    )
}

# Letters, digits and the separators couriers print; nothing that could break out of a URL.
TRACKING_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{3,38}[A-Za-z0-9]")


def carrier_named(code: str | None) -> Carrier | None:
    return CARRIERS.get(code or "")


def clean_tracking_number(raw: str) -> str | None:
    """The tracking number as couriers print it (upper case, single spaces), or None."""
    number = " ".join((raw or "").split()).upper()
    return number if TRACKING_NUMBER.fullmatch(number) else None


def tracking_link(carrier_code: str | None, number: str | None) -> str | None:
    carrier = carrier_named(carrier_code)
    if carrier is None or not number:
        return None
    return carrier.tracking_link(number)
