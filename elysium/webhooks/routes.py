"""Endpoints that outside services call. They prove who they are by signature, not CSRF."""

from __future__ import annotations

import json

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from elysium.extensions import csrf, db
from elysium.integrations import sanity
from elysium.integrations.stripe_gateway import InvalidWebhookError, verify_webhook
from elysium.services import catalog_changes, catalog_sync
from elysium.services.payments import MalformedEventError, handle_event
from elysium.services.sql import storable

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

# The column that records a change is this long; a Sanity id is far shorter.
MAX_DOCUMENT_ID = 120


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


@bp.post("/sanity")
@csrf.exempt
def sanity_event() -> tuple[Response, int]:
    """A document changed in the studio: verify the signature, record the change and answer
    202 at once; the change is applied after the response is sent (and, if Sanity can't be
    read then, by ``flask catalog apply-changes`` later: it is never lost).

    401 for a bad, missing or stale signature and 400 for a body without a document id:
    nothing changes. A replay only applies the document again, which changes nothing. Drafts
    never reach the shop, so their announcements are acknowledged and dropped.
    """
    body = request.get_data(cache=False)
    secret = current_app.config.get("SANITY_WEBHOOK_SECRET") or ""
    if not sanity.verify_webhook(request.headers.get(sanity.SIGNATURE_HEADER), body, secret):
        current_app.logger.warning("Sanity webhook refused: bad or missing signature")
        return jsonify(error="invalid signature"), 401
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    doc_id = payload.get("_id") if isinstance(payload, dict) else None
    if (
        not isinstance(doc_id, str)
        or not doc_id.strip()
        or len(doc_id) > MAX_DOCUMENT_ID
        or not storable(doc_id)
    ):
        current_app.logger.warning("Sanity webhook refused: no document id in the body")
        return jsonify(error="malformed body"), 400
    response = jsonify(accepted=True, id=doc_id)
    if doc_id.startswith(catalog_sync.DRAFT_PREFIX):
        return response, 202
    catalog_changes.record_change(db.session, doc_id, deleted=payload.get("operation") == "delete")
    db.session.commit()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    response.call_on_close(lambda: apply_announced_change(app, doc_id))
    return response, 202


def apply_announced_change(app: Flask, doc_id: str) -> None:
    """Apply the change just recorded for ``doc_id``, in its own app context and session
    (after the webhook's response, by the worker that gave it: Sanity is asked once, briefly);
    a failure stays recorded for a later try."""
    with app.app_context():
        try:
            for change in catalog_changes.due_changes(db.session, document_id=doc_id, limit=1):
                catalog_changes.apply_change(
                    db.session,
                    change,
                    fetch=sanity.fetch_document_at_once,
                    currency=app.config["SHOP_CURRENCY"],
                )
        except Exception:
            db.session.rollback()
            app.logger.exception("Sanity document %s: the change stays recorded", doc_id)
        finally:
            db.session.remove()
