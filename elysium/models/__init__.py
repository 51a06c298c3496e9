"""All models, imported here so Alembic and the app see the whole schema."""

from elysium.models.cart import Cart, CartLine, WishlistItem
from elysium.models.catalog import (
    CatalogChange,
    CatalogVersion,
    Category,
    Collection,
    OptionKind,
    Product,
    ProductOption,
)
from elysium.models.engagement import (
    BespokeLead,
    BespokeQuote,
    LeadEvent,
    LeadStatus,
    ProductView,
)
from elysium.models.inventory import Inventory, StockMovement, StockMovementKind, StockReason
from elysium.models.orders import (
    Order,
    OrderEvent,
    OrderLine,
    OrderStatus,
    ProcessedPaymentEvent,
    Refund,
    RefundStatus,
)
from elysium.models.outbox import OutboxEmail, OutboxStatus
from elysium.models.users import (
    Address,
    CustomerProfile,
    OAuthAccount,
    RecoveryCode,
    Role,
    User,
)

__all__ = [
    "Address",
    "BespokeLead",
    "BespokeQuote",
    "Cart",
    "CartLine",
    "CatalogChange",
    "CatalogVersion",
    "Category",
    "Collection",
    "CustomerProfile",
    "Inventory",
    "LeadEvent",
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
    "RecoveryCode",
    "Refund",
    "RefundStatus",
    "Role",
    "StockMovement",
    "StockMovementKind",
    "StockReason",
    "User",
    "WishlistItem",
]
