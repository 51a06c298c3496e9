"""The product art: one drawing per piece, in the chosen metal, with the chosen stone.

Each piece is a Jinja template, ``templates/art/products/<name>.svg``, drawn in yellow gold:
every metal colour in it is written ``m['<yellow-gold hex>']`` and is looked up in the chosen
metal's palette (``METALS``), and the stones are wrapped in ``grow(x, y)``, a transform that
scales them about the point where they sit in their setting, by the cube root of the chosen
weight over the weight the drawing shows (``STONES``: a stone twice as heavy is about a
quarter wider). A picture is named by piece, metal and stone, nothing else, so it is drawn
without the database (``elysium.art`` serves it) and any page can show it from a product and
a configuration, or from an order line's snapshot alone.
"""

from __future__ import annotations

import colorsys
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal

import resvg_py
from flask import current_app, url_for

from elysium.integrations import sanity
from elysium.urls import absolute_url

DRAWINGS = Path(__file__).resolve().parent.parent.parent / "templates" / "art" / "products"
NO_STONE = "none"
CARATS_MIN, CARATS_MAX = Decimal("0.05"), Decimal("20.00")
STONE_CODE = re.compile(r"(\d{1,2}\.\d{2})ct")
SCALE_MIN, SCALE_MAX = 0.6, 1.6
# A CDN image's widths: what ``src`` asks for, and what ``srcset`` offers the browser.
IMAGE_WIDTH = 600
IMAGE_WIDTHS = (300, 600, 900, 1200)
# A drawing as a PNG, for what shows no SVG: email clients (Gmail, Outlook), link previews
# (``og:image``) and search engines (structured data). Its side in pixels; a process keeps
# the last RASTERS_KEPT it made (tens of KB each).
RASTER_SIZE = 480
RASTERS_KEPT = 64

# The yellow-gold drawing's own tones, lightest first: the keys of every palette.
GOLD_TONES = (
    "FFF6D8",
    "FFF4D0",
    "FFF3CF",
    "FFF1C8",
    "FCEFC0",
    "F3D98B",
    "E8CB7C",
    "E2C06A",
    "D8B35B",
    "D4B05B",
    "C9A24A",
    "B08A3A",
    "A9852F",
    "A8822F",
    "A5812F",
    "9C7A2C",
    "8E6B22",
    "7A5A1A",
)


@dataclass(frozen=True)
class Metal:
    """How a metal recolours the yellow-gold tones: its hue, how much of gold's colour it keeps
    (``saturation``), and how its lightness maps from gold's (``lightness * l + lift``)."""

    label: str
    hue: float | None = None  # degrees; None keeps gold's own tones
    saturation: float = 1.0
    lightness: float = 1.0
    lift: float = 0.0

    def tone(self, gold: str) -> str:
        if self.hue is None:
            return f"#{gold}"
        red, green, blue = (int(gold[index : index + 2], 16) / 255 for index in (0, 2, 4))
        _, light, saturation = colorsys.rgb_to_hls(red, green, blue)
        light = min(1.0, light * self.lightness + self.lift)
        channels = colorsys.hls_to_rgb(self.hue / 360, light, saturation * self.saturation)
        return "#" + "".join(f"{round(channel * 255):02X}" for channel in channels)

    @property
    def palette(self) -> dict[str, str]:
        return {gold: self.tone(gold) for gold in GOLD_TONES}


METALS: dict[str, Metal] = {
    "yellow-gold": Metal("yellow gold"),
    # a little warmth left in a silver grey
    "white-gold": Metal("white gold", hue=44, saturation=0.13, lightness=0.84, lift=0.15),
    # cooler, and brighter than white gold
    "platinum": Metal("platinum", hue=210, saturation=0.09, lightness=0.76, lift=0.24),
    # pink copper
    "rose-gold": Metal("rose gold", hue=14, saturation=0.62, lightness=0.98, lift=0.02),
}
DEFAULT_METAL = "yellow-gold"


@dataclass(frozen=True)
class Stones:
    """A drawing's stones: the weight they are drawn at, and how the weight is said
    (one stone, the centre stone of a halo, or the total of many)."""

    drawn_at: Decimal
    kind: Literal["single", "centre", "total"] = "single"


STONES: dict[str, Stones] = {
    "aurelia-solitaire-ring": Stones(Decimal("0.50")),
    "aurelia-diamond-pendant": Stones(Decimal("0.25")),
    "lumiere-halo-ring": Stones(Decimal("0.70"), "centre"),
    "lumiere-eternity-band": Stones(Decimal("1.00"), "total"),
    "lumiere-tennis-bracelet": Stones(Decimal("3.00"), "total"),
    "lumiere-diamond-studs": Stones(Decimal("1.00"), "total"),
    "lumiere-riviere-necklace": Stones(Decimal("5.00"), "total"),
    "lumiere-drop-earrings": Stones(Decimal("0.80"), "total"),
    "meridian-east-west-ring": Stones(Decimal("0.75")),
    "ondine-wave-ring": Stones(Decimal("0.20")),
    "ondine-pear-pendant": Stones(Decimal("0.70")),
    "ondine-ear-climbers": Stones(Decimal("0.25"), "total"),
    "ondine-droplet-bracelet": Stones(Decimal("0.15"), "total"),
}


@cache
def drawings() -> frozenset[str]:
    """The pieces that have a drawing."""
    return frozenset(path.stem for path in DRAWINGS.glob("*.svg"))


def carats(stone: str | None) -> Decimal | None:
    """The weight in a diamond code such as ``0.50ct``, when it is a sane weight."""
    match = STONE_CODE.fullmatch(stone or "")
    if match is None:
        return None
    try:
        weight = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        return None
    return weight if CARATS_MIN <= weight <= CARATS_MAX else None


def stone_scale(name: str, stone: str) -> float:
    stones = STONES.get(name)
    weight = carats(stone)
    if stones is None or weight is None:
        return 1.0
    scale = float(weight / stones.drawn_at) ** (1 / 3)
    return round(min(SCALE_MAX, max(SCALE_MIN, scale)), 3)


def is_drawable(name: str, metal: str, stone: str) -> bool:
    """Whether piece, metal and stone names a picture: a piece with stones takes a sane weight
    (or ``none``: as drawn), a piece without takes only ``none``."""
    if name not in drawings() or metal not in METALS:
        return False
    if stone == NO_STONE:
        return True
    return name in STONES and carats(stone) is not None


def fingerprint(name: str) -> str:
    """A version of a piece's pictures: its template and everything that colours or sizes it.

    Worked out once per drawing. Where templates are reloaded when their file changes (a
    developer's server), the file's modification time is read on every call, so an edited
    drawing gets a new fingerprint with its new look; elsewhere the drawing drawn is the one
    first loaded, and so is its fingerprint (a page of cards asks for a dozen)."""
    if not current_app.jinja_env.auto_reload:
        return _fingerprint(name, 0)
    return _fingerprint(name, (DRAWINGS / f"{name}.svg").stat().st_mtime_ns)


@cache
def _fingerprint(name: str, modified: int) -> str:
    digest = hashlib.sha256((DRAWINGS / f"{name}.svg").read_bytes())
    digest.update(repr((sorted(METALS.items()), STONES.get(name), SCALE_MIN, SCALE_MAX)).encode())
    return digest.hexdigest()[:12]


def _grower(scale: float) -> Callable[[float, float], str]:
    def grow(x: float, y: float) -> str:
        """Scale about (x, y): the stone stays seated where the drawing sets it."""
        return f"matrix({scale:g} 0 0 {scale:g} {x * (1 - scale):.2f} {y * (1 - scale):.2f})"

    return grow


def draw(name: str, metal: str, stone: str) -> str | None:
    """The SVG for piece, metal and stone, or None when that names no picture."""
    if not is_drawable(name, metal, stone):
        return None
    scale = stone_scale(name, stone)
    template = current_app.jinja_env.get_template(f"art/products/{name}.svg")
    return template.render(m=METALS[metal].palette, grow=_grower(scale))


def raster(name: str, metal: str, stone: str) -> bytes | None:
    """The picture as a ``RASTER_SIZE`` PNG (:func:`draw`'s SVG, rendered), or None when
    that names no picture."""
    svg = draw(name, metal, stone)
    return None if svg is None else _rendered(svg)


@lru_cache(maxsize=RASTERS_KEPT)
def _rendered(svg: str) -> bytes:
    """Rendering takes tens of milliseconds where drawing takes one: a process renders each
    drawing it is asked for again once (keyed by the SVG itself, so an edited drawing is
    rendered afresh). The drawings hold no text, so no fonts are looked for."""
    size = RASTER_SIZE
    return bytes(
        resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, skip_system_fonts=True)
    )


@dataclass(frozen=True)
class Picture:
    """One configured piece as a page shows it: where its drawing is and what it shows.

    A piece with images from the content source (Sanity's CDN) shows its first image instead:
    ``image`` is that image at ``IMAGE_WIDTH`` and ``srcset`` offers it at ``IMAGE_WIDTHS``
    (a drawing has no ``srcset``: it is a vector)."""

    name: str
    metal: str
    stone: str
    alt: str
    image: str | None = None
    srcset: str | None = None

    @property
    def _values(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metal": self.metal,
            "stone": self.stone,
            "v": fingerprint(self.name),
        }

    @property
    def src(self) -> str:
        if self.image:
            return self.image
        return url_for("art.drawing", **self._values)

    @property
    def absolute_src(self) -> str:
        """For emails, link previews and search engines: on ``SITE_URL`` like every link an
        email carries (a CDN image is absolute already), and a drawing as a PNG, since none
        of them shows an SVG."""
        if self.image:
            return self.image
        return absolute_url("art.raster", **self._values)


def _alt(title: str, name: str, metal: str, stone: str) -> str:
    text = f"{title} in {METALS[metal].label}"
    stones = STONES.get(name)
    weight = carats(stone)
    if stones is None or weight is None:
        return text
    if stones.kind == "total":
        return f"{text} with {weight:.2f} ct of diamonds"
    if stones.kind == "centre":
        return f"{text} with a {weight:.2f} ct centre diamond"
    return f"{text} with a {weight:.2f} ct diamond"


def picture(name: str, title: str, metal: str | None, diamond: str | None) -> Picture | None:
    """The picture of piece ``name`` (called ``title``) in ``metal`` with ``diamond``; a metal
    with no palette shows as drawn (yellow gold) and says no metal; no drawing, no picture."""
    if name not in drawings():
        return None
    stone = diamond if name in STONES and carats(diamond) is not None else NO_STONE
    if metal in METALS:
        return Picture(name, metal, stone, _alt(title, name, metal, stone))
    return Picture(name, DEFAULT_METAL, stone, title)


def artwork_name(artwork: str | None) -> str:
    """``products/<name>.svg`` (a product's ``artwork``) → ``<name>``."""
    return Path(artwork or "").stem


def _image(url: str, name: str, alt: str) -> Picture:
    return Picture(
        name,
        DEFAULT_METAL,
        NO_STONE,
        alt,
        image=sanity.image_url(url, IMAGE_WIDTH),
        srcset=sanity.srcset(url, IMAGE_WIDTHS),
    )


def image_picture(product: Any) -> Picture | None:
    """A piece's first image from the content source (Sanity's CDN), if it has one: at
    ``IMAGE_WIDTH`` with a ``srcset``, described by its alt text or else the piece's name."""
    first = next(iter(getattr(product, "images", None) or []), None)
    url = first.get("url") if isinstance(first, Mapping) else None
    if not url:
        return None
    alt = (first.get("alt") or "").strip() or product.name
    return _image(url, artwork_name(product.artwork), alt)


def collection_picture(collection: Any) -> Picture | None:
    """A collection's hero image from the content source, if the studio gave it one."""
    image = collection.image or {}
    if not image.get("url"):
        return None
    return _image(image["url"], collection.slug, (image.get("alt") or "").strip())


def product_picture(product: Any, configuration: Mapping[str, Any] | None = None) -> Picture | None:
    """A product in a configuration (a choice the piece does not offer takes its first option,
    as the configurator does); without one, in its first metal and diamond. A piece with no
    drawing shows its first image from Sanity instead: the drawing wins, since it follows the
    configuration and a photograph can't."""
    if artwork_name(product.artwork) not in drawings():
        return image_picture(product)
    configuration = configuration or {}
    metals = [option.code for option in product.metals]
    diamonds = [option.code for option in product.diamonds]
    metal = configuration.get("metal")
    diamond = configuration.get("diamond")
    return picture(
        artwork_name(product.artwork),
        product.name,
        metal if metal in metals else next(iter(metals), None),
        diamond if diamond in diamonds else next(iter(diamonds), None),
    )


def line_picture(line: Any) -> Picture | None:
    """An order line's picture, from its snapshot only (the product may be gone or changed):
    the drawing in the bought configuration, else the image the piece had when bought."""
    configuration = line.configuration or {}
    drawn = picture(
        line.product_slug,
        line.product_name,
        configuration.get("metal"),
        configuration.get("diamond"),
    )
    if drawn is None and getattr(line, "image_url", None):
        return _image(line.image_url, line.product_slug, line.product_name)
    return drawn
