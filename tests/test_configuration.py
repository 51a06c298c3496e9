"""The configurator's rules: choices, ring sizes, engraving, and the price they make."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from elysium import house_time
from elysium.extensions import db
from elysium.models import Product
from elysium.services.configuration import (
    RING_SIZES,
    Configuration,
    ConfigurationError,
    configure,
    price_breakdown,
)
from elysium.services.inventory import StockStatus, variant_availability


@pytest.fixture
def product(catalogue, app_context):
    def load(slug: str) -> Product:
        return db.session.scalars(select(Product).where(Product.slug == slug)).one()

    return load


def test_ring_sizes_are_us_3_to_13_in_half_sizes():
    assert RING_SIZES[0] == "3"
    assert RING_SIZES[-1] == "13"
    assert "6.5" in RING_SIZES
    assert len(RING_SIZES) == 21


def test_missing_choices_take_the_first_metal_and_diamond(product):
    ring = product("aurelia-solitaire-ring")
    configuration = configure(ring, {})
    assert configuration == Configuration(metal="yellow-gold", diamond="0.30ct")
    assert configuration.variant_key == "yellow-gold/0.30ct"


def test_price_is_base_plus_each_delta_plus_engraving_fee(product):
    ring = product("aurelia-solitaire-ring")
    configuration = configure(
        ring, {"metal": "platinum", "diamond": "0.50ct", "size": "6.5", "engraving": "Always"}
    )
    breakdown = price_breakdown(ring, configuration)
    assert [line.amount for line in breakdown.lines] == [185000, 45000, 120000, 9500]
    assert breakdown.total == 185000 + 45000 + 120000 + 9500
    assert breakdown.currency == "GBP"


@pytest.mark.parametrize("size", ["2.5", "13.5", "7.25", "abc", "-1", "1e1"])
def test_ring_size_outside_us_3_to_13_is_refused(product, size):
    with pytest.raises(ConfigurationError) as error:
        configure(product("aurelia-solitaire-ring"), {"size": size})
    assert "ring size" in error.value.errors["size"]


def test_ring_size_is_required_when_asked_for(product):
    with pytest.raises(ConfigurationError) as error:
        configure(product("aurelia-solitaire-ring"), {}, require_size=True)
    assert error.value.errors == {"size": "Choose your ring size."}


def test_a_necklace_has_no_ring_size_or_engraving(product):
    chain = product("aurelia-fine-chain")
    with pytest.raises(ConfigurationError) as error:
        configure(chain, {"size": "6", "engraving": "Hi"})
    assert set(error.value.errors) == {"size", "engraving"}


def test_unknown_metal_or_diamond_is_refused(product):
    with pytest.raises(ConfigurationError) as error:
        configure(product("aurelia-solitaire-ring"), {"metal": "silver", "diamond": "9ct"})
    assert set(error.value.errors) == {"metal", "diamond"}


@pytest.mark.parametrize(
    "engraving",
    ["Forever & always", "Zoë, 12.06.2021", "Amélie - Léon", "O'Brien", "Ålesund 1998", "愛"],
)
def test_engraving_accepts_letters_with_accents_digits_and_allowed_punctuation(product, engraving):
    configuration = configure(product("aurelia-solitaire-ring"), {"engraving": engraving})
    assert configuration.engraving == engraving


def test_engraving_is_counted_after_nfc_normalisation(product):
    decomposed = "Zoe\u0308" * 8 + "A"  # 25 characters once composed, 33 code points before
    assert len(decomposed) == 33
    configuration = configure(product("aurelia-solitaire-ring"), {"engraving": decomposed})
    assert configuration.engraving == "Zoë" * 8 + "A"
    assert len(configuration.engraving) == 25


def test_engraving_over_25_characters_is_refused(product):
    with pytest.raises(ConfigurationError) as error:
        configure(product("aurelia-solitaire-ring"), {"engraving": "A" * 26})
    assert "at most 25 characters" in error.value.errors["engraving"]


@pytest.mark.parametrize("character", ["<", "!", "@", "#", "😀", "/", "\\", '"', "_"])
def test_engraving_refuses_characters_outside_the_set(product, character):
    with pytest.raises(ConfigurationError) as error:
        configure(product("aurelia-solitaire-ring"), {"engraving": f"Love{character}"})
    assert "can't be engraved" in error.value.errors["engraving"]


@pytest.mark.parametrize(
    "character", ["\u200b", "\u200d", "\u0000", "\n", "\t", "\u202e", "\u00a0"]
)
def test_engraving_refuses_control_and_invisible_characters(product, character):
    with pytest.raises(ConfigurationError) as error:
        configure(product("aurelia-solitaire-ring"), {"engraving": f"Lo{character}ve"})
    assert "invisible or control" in error.value.errors["engraving"]


def test_the_same_choices_always_have_the_same_canonical_hash(product):
    ring = product("aurelia-solitaire-ring")
    first = configure(ring, {"metal": "platinum", "engraving": "  Amélie "})
    second = configure(ring, {"engraving": "Ame\u0301lie", "metal": "platinum", "size": ""})
    assert first.canonical() == second.canonical()
    assert first.hash == second.hash
    other = configure(ring, {"metal": "platinum", "engraving": "Amelie"})
    assert other.hash != first.hash


def test_availability_messages(product):
    ring = product("aurelia-solitaire-ring")
    assert variant_availability(ring, "yellow-gold/0.30ct").message == "In stock"
    assert variant_availability(ring, "yellow-gold/1.00ct").message == "Only 1 left"
    platinum = variant_availability(ring, "platinum/0.30ct")
    assert platinum.status is StockStatus.SOLD_OUT
    assert platinum.message.startswith("Sold out in platinum")
    signet = variant_availability(product("aurelia-signet-ring"), "yellow-gold")
    assert signet.status is StockStatus.MADE_TO_ORDER
    ships_by = house_time.today() + timedelta(weeks=3)
    assert signet.message == (
        f"Made to order — ships in about 3 weeks, by {ships_by.day} {ships_by:%B}"
    )
