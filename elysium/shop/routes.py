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
from elysium.shop.forms import read_filters, region_key, worth_keeping_listing
from elysium.web.browsing import read_recently_viewed_first, record_product_view
from elysium.web.configurator import (
    CONFIGURATION_FIELDS,
    configurator_context,
    product_page_context,
    worth_keeping,
)
from elysium.web.fragments import briefly, card_links, kept, product_to_show
from elysium.web.wishlist import heart_marks, put_hearts

bp = Blueprint("shop", __name__)

# How long each process shows the trending pieces it last read before asking Redis again.
TRENDING_HELD_SECONDS = 5


@bp.get("/")
def home() -> str:
    def window() -> tuple:
        collections = catalog.collection_cards(db.session)
        featured = catalog.featured_products(db.session, limit=4)
        return collections, featured, card_links(featured, 3)

    collections, featured, links = kept("home", (), window)
    # "Trending now": the week's most viewed pieces (their ids are cached for a minute, and
    # each process keeps its copy a few seconds), read as cards like the rest, so a piece taken
    # off sale leaves at once. None while too few pieces have been viewed: the featured pieces
    # then stand alone, not the same cards twice.
    ids = briefly("trending", TRENDING_HELD_SECONDS, lambda: views.trending_ids(db.session))

    def trending_cards() -> tuple:
        cards = catalog.product_cards(db.session, ids)
        return cards, card_links(cards, 3)

    trending, trending_links = kept("trending", ids, trending_cards) if ids else ([], {})
    cards = [*featured, *trending]
    page = render_template(
        "shop/home.html",
        collections=collections,
        featured=featured,
        trending=trending,
        card_links={**links, **trending_links},
        card_hearts=heart_marks(cards),
    )
    return put_hearts(page, cards)


def _filter_choices() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The collections and metals the listing's filters offer, as (value, label)."""
    return [(c.slug, c.name) for c in catalog.collections(db.session)], catalog.metal_choices(
        db.session
    )


@bp.get("/shop")
def listing() -> Response:
    collections, metals = kept("filter-choices", (), _filter_choices)
    form, query, notes = read_filters(request.args, collections, metals)
    per_page = current_app.config["SHOP_PAGE_SIZE"]

    def results() -> tuple:
        found = catalog.search_products(db.session, query, per_page)
        return found, card_links(list(found.products), 2)

    common = worth_keeping_listing(query)
    page, links = kept("listing", (query, per_page), results, keep=lambda _: common)
    # One region holds everything the filters decide (heading, filters, notes, results); for
    # htmx it comes with the page title and the header nav, which say the same (out of band).
    # It is kept for everyone under the filters as sent, with marks where the shopper's
    # hearts go in; a query string holding anything else, or a listing not worth keeping
    # (search words, prices), or a filter's value it doesn't offer (noted), is drawn but not
    # kept (no key).
    sent = region_key(request.args) if common and not notes else None
    return render(
        "shop/listing.html",
        "shop/_listing.html",
        finish=lambda body: put_hearts(body, page.products),
        form=form,
        query=query,
        page=page,
        notes=[*notes, *page.notes],
        card_links=links,
        card_hearts=heart_marks(page.products),
        region_key=None if sent is None else (per_page, sent),
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
    read_recently_viewed_first(slug)
    context = product_page_context(slug, _requested_choices()) or abort(404)
    status = 422 if context["errors"] else 200
    response = make_response(render_template("shop/product.html", **context), status)
    # After rendering: it can never break the page.
    record_product_view(context["product"].id, context["product"].slug, response)
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
    """The configurator's price panel for htmx; a plain request is sent to the product page.

    The panel shows the catalogue and the choices in the URL, nothing of the shopper's, so
    it is kept per catalogue version; except when it brings a new "Add to bag" block, which
    carries the shopper's CSRF token, and for choices not worth keeping (``worth_keeping``)."""
    if not is_htmx():
        found = product_to_show(slug) or abort(404)
        return redirect(_product_url(found.slug), 303)
    shown = request.args.get("add_to_bag_state", "")
    # The quantity is drawn only in a new "Add to bag" block, which is never kept.
    key = (slug, tuple(_requested_choices().items()), shown)

    def panel() -> tuple[str, int, str, bool]:
        found = product_to_show(slug) or abort(404)
        context = configurator_context(found, _requested_choices())
        body = render_template(
            "shop/_price_panel.html", oob_errors=True, add_to_bag_shown=shown, **context
        )
        status = 422 if context["errors"] else 200
        keep = worth_keeping(context) and context["add_to_bag_state"] == shown
        return body, status, _product_url(found.slug), keep

    body, status, product_url, _ = kept("price", key, panel, keep=lambda made: made[3])
    response = make_response(body, status)
    response.headers["HX-Replace-Url"] = product_url
    # A new "Add to bag" block carries the shopper's CSRF token; no cache keeps any of it.
    response.headers["Cache-Control"] = "no-store"
    response.vary.add("HX-Request")
    return response


def _product_url(slug: str) -> str:
    """The product page with the configuration the request carries (and nothing else)."""
    chosen = {name: request.args[name] for name in CONFIGURATION_FIELDS if request.args.get(name)}
    return url_for("shop.product", slug=slug, **chosen)
