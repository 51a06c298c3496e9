"""An order line keeps the image its piece had when it was bought (a piece added in Sanity
has no drawing): the order pages show it even after the piece changes."""

from __future__ import annotations

from sqlalchemy import select

from elysium.extensions import db
from elysium.models import OrderLine, Product
from tests.html import Page
from tests.support.checkout import CHAIN, add_chain, check_out
from tests.support.staff import staff_client

CDN_IMAGE = "https://cdn.sanity.io/images/elysium0/production/chain-0123-1200x1200.jpg"


def test_an_order_keeps_the_image_a_piece_had_when_bought(shop, app):
    """Checkout copies the piece's first image onto the order line; a line whose piece the
    shop has no drawing of is shown with that image, whatever happens to the piece later."""
    with app.app_context():
        chain = db.session.scalar(select(Product).where(Product.slug == CHAIN))
        chain.images = [{"url": CDN_IMAGE, "alt": "The chain on linen"}]
        db.session.commit()
        db.session.remove()
    client = shop.client()
    add_chain(client)
    assert check_out(client).status_code == 303

    with app.app_context():
        line = db.session.scalar(select(OrderLine))
        assert line.image_url == CDN_IMAGE
        # The piece is renamed to one the shop has no drawing of, and loses its images.
        line.product_slug = "a-piece-from-the-studio"
        db.session.scalar(select(Product).where(Product.slug == CHAIN)).images = []
        number = line.order.number
        db.session.commit()
        db.session.remove()

    staff = staff_client(shop.app)
    shown = Page(staff.get(f"/staff/orders/{number}")).one("img.line-art")
    assert shown["src"] == f"{CDN_IMAGE}?w=600&auto=format"
    assert shown["alt"] == "Aurelia Fine Chain"
    assert "300w" in shown["srcset"]
