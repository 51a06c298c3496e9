"""a reservation that changes nothing a shopper sees leaves the catalogue's version alone

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 19:00:00.000000

Every checkout reserves stock, and with 0008's triggers every reservation renewed the
catalogue's version, so in a busy hour (a launch, the week before Christmas) what the shop
keeps was thrown away with each sale, on every server. A shopper sees a variant's stock only
as its status ("In stock", "Only 2 left", made to order, sold out), and the number only while
it is low. So an update of an ``inventory`` row now renews the version unless it is quiet:
only ``reserved`` (and ``updated_at``) changed, and before and after there were more units to
sell than the row's low-stock threshold (so "In stock" both times). Anything else (a stock
level, a threshold or a lead time changed, a variant running low, selling out or coming back)
renews it as before, and so does every insert and delete. The condition is the database's,
so it holds for any writer.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def quiet(same: str) -> str:
    """The SQL condition for an update no shopper can see; ``same`` is the dialect's
    null-safe equality."""
    return (
        "OLD.product_id = NEW.product_id AND OLD.variant_key = NEW.variant_key "
        "AND OLD.stock_level = NEW.stock_level "
        "AND OLD.low_stock_threshold = NEW.low_stock_threshold "
        f"AND OLD.lead_time_weeks {same} NEW.lead_time_weeks "
        "AND OLD.stock_level - OLD.reserved > 0 AND NEW.stock_level - NEW.reserved > 0 "
        "AND OLD.stock_level - OLD.reserved > OLD.low_stock_threshold "
        "AND NEW.stock_level - NEW.reserved > NEW.low_stock_threshold"
    )


SQLITE_RENEW = (
    "INSERT OR REPLACE INTO catalog_version (id, token) VALUES (1, lower(hex(randomblob(16))))"
)


def upgrade():
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER catalog_version_inventory ON inventory")
        op.execute(
            "CREATE CONSTRAINT TRIGGER catalog_version_inventory "
            "AFTER INSERT OR DELETE ON inventory "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "EXECUTE FUNCTION catalog_version_renew()"
        )
        op.execute(
            "CREATE CONSTRAINT TRIGGER catalog_version_inventory_update "
            "AFTER UPDATE ON inventory "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            f"WHEN (NOT ({quiet('IS NOT DISTINCT FROM')})) "
            "EXECUTE FUNCTION catalog_version_renew()"
        )
    else:
        op.execute("DROP TRIGGER catalog_version_inventory_update")
        op.execute(
            "CREATE TRIGGER catalog_version_inventory_update AFTER UPDATE ON inventory "
            f"WHEN NOT ({quiet('IS')}) BEGIN {SQLITE_RENEW}; END"
        )


def downgrade():
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER catalog_version_inventory_update ON inventory")
        op.execute("DROP TRIGGER catalog_version_inventory ON inventory")
        op.execute(
            "CREATE CONSTRAINT TRIGGER catalog_version_inventory "
            "AFTER INSERT OR UPDATE OR DELETE ON inventory "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "EXECUTE FUNCTION catalog_version_renew()"
        )
    else:
        op.execute("DROP TRIGGER catalog_version_inventory_update")
        op.execute(
            "CREATE TRIGGER catalog_version_inventory_update AFTER UPDATE ON inventory "
            f"BEGIN {SQLITE_RENEW}; END"
        )
