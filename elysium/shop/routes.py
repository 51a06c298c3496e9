"""The shop window: home, listing, collections, product pages and the configurator."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from elysium.extensions import db
from elysium.htmx import is_htmx, render
from elysium.services import catalog, views
from elysium.shop.forms import ShopFilterForm
from elysium.web.browsing import record_product_view
from elysium.web.configurator import CONFIGURATION_FIELDS, configurator_context

bp = Blueprint("shop", __name__)


@bp.get("/")
def home() -> str:
    return render_template(
        "shop/home.html",
        collections=catalog.collections(db.session),
        featured=catalog.featured_products(db.session, limit=4),
        trending=views.trending(db.session),
    )


@bp.get("/shop")
def listing() -> Response:
    collections = catalog.collections(db.session)
    form = ShopFilterForm(
        request.args,
        collections=[(c.slug, c.name) for c in collections],
        metals=catalog.metal_choices(db.session),
    )
    query, notes = form.to_query()
    page = catalog.search_products(db.session, query, current_app.config["SHOP_PAGE_SIZE"])
    # One region holds everything the filters decide (heading, filters, notes, results); for
    # htmx it comes with the page title and the header nav, which say the same (out of band).
    return render(
        "shop/listing.html",
        "shop/_listing.html",
        form=form,
        query=query,
        page=page,
        notes=notes + page.notes,
        collections=collections,
        oob_nav=is_htmx(),
    )


@bp.get("/collections/<slug>")
def collection(slug: str) -> str:
    found = catalog.collection_by_slug(db.session, slug) or abort(404)
    return render_template(
        "shop/collection.html",
        collection=found,
        products=catalog.collection_products(db.session, found),
    )


def _requested_choices() -> dict[str, str]:
    return {name: request.args.get(name, "") for name in CONFIGURATION_FIELDS}


@bp.get("/shop/<slug>")
def product(slug: str) -> Response:
    found = catalog.product_by_slug(db.session, slug) or abort(404)
    context = configurator_context(found, _requested_choices())
    status = 422 if context["errors"] else 200
    response = make_response(render_template("shop/product.html", **context), status)
    record_product_view(found.id, response)  # after rendering: it can never break the page
    return response


@bp.get("/recently-viewed")
def recently_viewed() -> Response:
    """The visitor's "Recently viewed" pieces, for htmx (``hx-trigger="revealed"``); a plain
    request is sent home. ``exclude`` is the slug of the piece on screen."""
    if not is_htmx():
        return redirect(url_for("shop.home"), 303)
    exclude = request.args.get("exclude", "")[:120] or None
    response = make_response(render_template("partials/_recently_viewed.html", exclude=exclude))
    response.headers["Cache-Control"] = "no-store"
    response.vary.update(("HX-Request", "Cookie"))
    return response


@bp.get("/shop/<slug>/price")
def price(slug: str) -> Response:
    """The configurator's price panel for htmx; a plain request is sent to the product page."""
    found = catalog.product_by_slug(db.session, slug) or abort(404)
    chosen = {name: request.args[name] for name in CONFIGURATION_FIELDS if request.args.get(name)}
    product_url = url_for("shop.product", slug=found.slug, **chosen)
    if not is_htmx():
        return redirect(product_url, 303)
    context = configurator_context(found, _requested_choices())
    status = 422 if context["errors"] else 200
    response = make_response(
        render_template(
            "shop/_price_panel.html",
            oob_errors=True,
            add_to_bag_shown=request.args.get("add_to_bag_state", ""),
            **context,
        ),
        status,
    )
    response.headers["HX-Replace-Url"] = product_url
    response.vary.add("HX-Request")
    return response
