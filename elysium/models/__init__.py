"""All models, imported here so Alembic and the app see the whole schema."""

from elysium.models.cart import Cart, CartLine, WishlistItem
from elysium.models.catalog import Category, Collection, OptionKind, Product, ProductOption
from elysium.models.engagement import BespokeLead, LeadStatus, ProductView
from elysium.models.inventory import Inventory, StockMovement, StockMovementKind
from elysium.models.orders import (
    Order,
    OrderEvent,
    OrderLine,
    OrderStatus,
    ProcessedPaymentEvent,
)
from elysium.models.outbox import OutboxEmail, OutboxStatus
from elysium.models.users import Address, CustomerProfile, OAuthAccount, Role, User

__all__ = [
    "Address",
    "BespokeLead",
    "Cart",
    "CartLine",
    "Category",
    "Collection",
    "CustomerProfile",
    "Inventory",
    "LeadStatus",
    "OAuthAccount",
    "OptionKind",
    "Order",
    "OrderEvent",
    "OrderLine",
    "OrderStatus",
    "OutboxEmail",
    "OutboxStatus",
    "ProcessedPaymentEvent",
    "Product",
    "ProductOption",
    "ProductView",
    "Role",
    "StockMovement",
    "StockMovementKind",
    "User",
    "WishlistItem",
]
