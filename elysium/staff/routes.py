"""The back office's pages under /staff: the dashboard here, and one nested blueprint per
area (the second factor, orders, fulfilment, stock). Every request passes the staff check
first (:mod:`elysium.staff.access`)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template, request

from elysium.extensions import db
from elysium.htmx import personal_pages
from elysium.services import staff_dashboard
from elysium.services.staff_orders import Tab
from elysium.staff.access import require_staff
from elysium.staff.fulfilment import bp as fulfilment_bp
from elysium.staff.inventory import bp as inventory_bp
from elysium.staff.leads import bp as leads_bp
from elysium.staff.orders import bp as orders_bp
from elysium.staff.quotes import bp as quotes_bp
from elysium.staff.security import bp as security_bp

bp = Blueprint("staff", __name__, url_prefix="/staff")
bp.register_blueprint(security_bp)
bp.register_blueprint(orders_bp)
bp.register_blueprint(fulfilment_bp)
bp.register_blueprint(inventory_bp)
bp.register_blueprint(leads_bp)
bp.register_blueprint(quotes_bp)

personal_pages(bp)


@bp.before_request
def staff_only() -> Response | None:
    """Staff only; the second factor's own pages need the role but not the factor."""
    return require_staff(second_factor=request.blueprint != "staff.security")


@bp.get("")
def dashboard() -> str:
    """Today's figures, each leading to the list it counts."""
    figures = staff_dashboard.dashboard(db.session, currency=current_app.config["SHOP_CURRENCY"])
    return render_template("staff/dashboard.html", figures=figures, tabs=Tab)
