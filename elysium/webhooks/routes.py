"""Endpoints that outside services call. They prove who they are by signature, not CSRF."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from elysium.extensions import csrf, db
from elysium.integrations.stripe_gateway import InvalidWebhookError, verify_webhook
from elysium.services.payments import MalformedEventError, handle_event

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


@bp.post("/stripe")
@csrf.exempt
def stripe_event() -> tuple[Response, int]:
    """Verify, record and apply one Stripe event; answer quickly.

    400 for anything that is not a correctly signed, readable event (Stripe shows these in
    its dashboard); 200 for replays and types we don't handle; a 500 makes Stripe retry.
    """
    try:
        event = verify_webhook(
            request.get_data(cache=False), request.headers.get("Stripe-Signature")
        )
        outcome = handle_event(db.session, event)
    except (InvalidWebhookError, MalformedEventError) as error:
        db.session.rollback()
        current_app.logger.warning("Stripe webhook refused: %s", error)
        return jsonify(error="invalid event"), 400
    db.session.commit()
    return jsonify(received=True, outcome=outcome.value), 200
