"""Endpoints that outside services call. They prove who they are by signature, not CSRF."""

from __future__ import annotations

import json

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from elysium.extensions import csrf, db
from elysium.integrations import sanity
from elysium.integrations.stripe_gateway import InvalidWebhookError, verify_webhook
from elysium.services import catalog_sync
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


@bp.post("/sanity")
@csrf.exempt
def sanity_event() -> tuple[Response, int]:
    """A document changed in the studio: verify the signature, answer 202 at once, then
    re-sync that one document (or unpublish it when deleted) after the response is sent.

    401 for a bad, missing or stale signature and 400 for a body without a document id:
    nothing changes. A replay only re-syncs the document again, which changes nothing.
    """
    body = request.get_data(cache=False)
    secret = current_app.config.get("SANITY_WEBHOOK_SECRET") or ""
    if not sanity.verify_webhook(request.headers.get(sanity.SIGNATURE_HEADER), body, secret):
        current_app.logger.warning("Sanity webhook refused: bad or missing signature")
        return jsonify(error="invalid signature"), 401
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    doc_id = payload.get("_id") if isinstance(payload, dict) else None
    if not isinstance(doc_id, str) or not doc_id.strip():
        current_app.logger.warning("Sanity webhook refused: no document id in the body")
        return jsonify(error="malformed body"), 400
    deleted = payload.get("operation") == "delete"
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    response = jsonify(accepted=True, id=doc_id)
    response.call_on_close(lambda: resync_document(app, doc_id, deleted=deleted))
    return response, 202


def resync_document(app: Flask, doc_id: str, *, deleted: bool = False) -> None:
    """Fetch one document and sync it, in its own app context and session (after the
    webhook's response); failures are logged, never raised."""
    if doc_id.startswith(catalog_sync.DRAFT_PREFIX):
        return
    with app.app_context():
        try:
            document = None if deleted else sanity.fetch_document(doc_id)
            if document is None:
                catalog_sync.unpublish(db.session, doc_id)
                app.logger.info("Sanity document %s is gone: unpublished", doc_id)
            else:
                outcome = catalog_sync.sync_document(
                    db.session, document, currency=app.config["SHOP_CURRENCY"]
                )
                app.logger.info("Sanity document %s synced: %s", doc_id, outcome)
        except catalog_sync.InvalidDocumentError as error:
            app.logger.warning("Sanity document %s skipped: %s", doc_id, error.reason)
        except Exception:
            db.session.rollback()
            app.logger.exception("Sanity document %s could not be synced", doc_id)
        finally:
            db.session.remove()
