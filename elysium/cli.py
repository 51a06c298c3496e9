"""``flask`` commands for operators and cron."""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import Any, NamedTuple

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from elysium.config import ConfigurationError
from elysium.extensions import db
from elysium.integrations import sanity
from elysium.integrations.email import backend_from_config
from elysium.models.types import utcnow
from elysium.services import catalog_changes, catalog_sync, payments, staff, views
from elysium.services.cart import PURGE_BATCH, purge_guest_carts
from elysium.services.checkout import (
    BANK_PAYMENT_OVERDUE,
    Settled,
    flag_overdue_bank_payment,
    overdue_bank_payment_ids,
    stale_order_ids,
    sweep_stale_order,
)
from elysium.services.outbox import (
    CLAIM_BATCH,
    SendReport,
    erase_sent_bodies,
    retry_failed,
    send_pending,
)
from elysium.services.seeding import load_demo_catalogue, seed_catalogue

logger = logging.getLogger(__name__)

emails_cli = AppGroup(
    "emails", help="The email outbox: send what is waiting, retry failures, erase what was sent."
)
carts_cli = AppGroup("carts", help="Bags: clear out the ones guests abandoned.")
orders_cli = AppGroup("orders", help="Orders: the safety nets cron runs.")
analytics_cli = AppGroup("analytics", help="Browsing memory: the product views the shop keeps.")
catalog_cli = AppGroup("catalog", help="The catalogue: follow the house's Sanity studio.")
AGE = re.compile(r"([1-9][0-9]{0,4})([dh])")


class Age(NamedTuple):
    text: str
    span: timedelta


class AgeType(click.ParamType):
    """An option's age, ``60d`` (days) or ``12h`` (hours): its text and its span."""

    name = "age"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Age:
        if isinstance(value, Age):
            return value
        text = str(value).strip()
        match = AGE.fullmatch(text.lower())
        if not match:
            self.fail(f"{value!r} is not an age like 60d or 12h.", param, ctx)
        number, unit = int(match.group(1)), match.group(2)
        return Age(text, timedelta(days=number) if unit == "d" else timedelta(hours=number))


AGE_TYPE = AgeType()


@click.command("seed")
@with_appcontext
def seed_command() -> None:
    """Load the demo catalogue (safe to run again: existing stock is never reset)."""
    report = seed_catalogue(db.session, load_demo_catalogue())
    db.session.commit()
    click.echo(f"Demo catalogue loaded: {report}.")


@click.command("create-staff")
@click.argument("email")
@click.option("--first-name", default="", help="For a new account.")
@click.option("--last-name", default="", help="For a new account.")
@with_appcontext
def create_staff_command(email: str, first_name: str, last_name: str) -> None:
    """Make EMAIL a member of staff (a new account, or an existing one promoted) and print a
    link, valid once within 24 hours, for them to choose a password. There is no default
    password; at their first staff sign-in they set up an authenticator."""
    try:
        invitation = staff.create_staff(
            db.session, email, first_name=first_name, last_name=last_name
        )
    except staff.StaffError as error:
        raise click.ClickException(error.message) from error
    db.session.commit()
    address = invitation.user.email
    click.echo(
        {
            staff.Change.CREATED: f"Created a staff account for {address}.",
            staff.Change.PROMOTED: f"{address} is now staff (their account and orders are kept).",
            staff.Change.ALREADY_STAFF: f"{address} is already staff.",
        }[invitation.change]
    )
    click.echo("Give them this link to choose a password (it works once, within 24 hours):")
    click.echo(invitation.link)


@click.command("revoke-staff")
@click.argument("email")
@with_appcontext
def revoke_staff_command(email: str) -> None:
    """Make EMAIL a shopper again: their authenticator and recovery codes are forgotten and
    every session of theirs ends at once."""
    try:
        revoked = staff.revoke_staff(db.session, email)
    except staff.StaffError as error:
        raise click.ClickException(error.message) from error
    db.session.commit()
    if revoked is None:
        click.echo(f"{email.strip().lower()} is not staff: nothing changed.")
    else:
        click.echo(f"{revoked.email} is no longer staff, and every session of theirs has ended.")


def _check_email_settings() -> None:
    try:
        backend_from_config(current_app.config).close()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc


@emails_cli.command("send-pending")
@click.option("--limit", default=100, show_default=True, help="Most emails to send in this run.")
def send_pending_command(limit: int) -> None:
    """Send the emails that are due, once (for cron). SIGTERM or Ctrl-C finish the current
    email and hand the rest claimed back, as the worker's do."""
    _check_email_settings()
    with _stopping_on_signals("Sending emails") as stop:
        report = send_pending(db.session, limit=limit, stop=stop)
    click.echo(f"Emails: {report}.")


@emails_cli.command("worker")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between looks at the outbox when nothing is due.",
)
@click.option("--once", is_flag=True, help="Make one pass and stop.")
def worker_command(interval: float, once: bool) -> None:
    """Keep sending due emails until stopped (SIGTERM or Ctrl-C finish the current email).

    The web app never sends: it only writes the outbox, and this worker finds new emails by
    looking again every ``--interval`` seconds. Run one or more beside the web servers.
    """
    _check_email_settings()
    with _stopping_on_signals("Email worker") as stop:
        backend = current_app.config["EMAIL_BACKEND"]
        click.echo(f"Email worker started ({backend} backend, every {interval:g}s when idle).")
        while not stop.is_set():
            report = _worker_pass(stop)
            if report.total:
                click.echo(f"Emails: {report}.")
            if once:
                break
            # Small passes, straight after one another while there is work; a stop request
            # waits for the email being sent, and the rest claimed are handed back.
            if report.total == 0 or report.retried or report.held:
                stop.wait(interval)
    click.echo("Email worker stopped.")


@contextmanager
def _stopping_on_signals(who: str) -> Iterator[threading.Event]:
    """While the block runs, SIGTERM and SIGINT (Ctrl-C) set the event it is given instead of
    ending the process, for ``send_pending``'s ``stop``: the email being sent is finished and
    the rest claimed are handed back, due at once, not left ``sending`` for
    ``STALE_CLAIM_AFTER``. The handlers they had are put back after."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        click.echo(f"{who}: {signal.Signals(signum).name} received, stopping.")
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, request_stop)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _worker_pass(stop: threading.Event) -> SendReport:
    try:
        return send_pending(db.session, limit=CLAIM_BATCH, stop=stop)
    except Exception:
        # A database blip must not end the worker; the next pass tries again.
        logger.exception("Email worker pass failed")
        db.session.rollback()
        return SendReport()
    finally:
        db.session.remove()


@emails_cli.command("retry-failed")
@click.option("--all", "every_failed", is_flag=True, help="Every failed email.")
@click.option(
    "--id",
    "ids",
    type=int,
    multiple=True,
    metavar="N",
    help="The failed email with this id (repeat for more).",
)
@click.option(
    "--queued-within",
    "queued_within",
    type=AGE_TYPE,
    help="Failed emails queued less than this long ago: Nd (days) or Nh (hours).",
)
def retry_failed_command(
    every_failed: bool, ids: tuple[int, ...], queued_within: Age | None
) -> None:
    """Put failed emails back, to be sent on the next pass. Say which: --all, or --id and/or
    --queued-within (together, the emails that match both).

    An email younger than EMAIL_GIVE_UP_AFTER_HOURS keeps its idempotency key: if one of its
    tries did reach Resend, Resend answers with that email and nobody gets it twice. An older
    one is sent under a new key, as Resend forgets a key after 24 hours: if one of its tries
    did reach the shopper (one that timed out or met a 5xx; a refused one never did), they
    get it a second time. Putting it back is that choice.
    """
    if every_failed == bool(ids or queued_within):
        raise click.UsageError("Say which failed emails: --all, or --id and/or --queued-within.")
    queued_since = None if queued_within is None else utcnow() - queued_within.span
    requeued = retry_failed(db.session, ids=ids or None, queued_since=queued_since)
    db.session.commit()
    count = len(requeued.ids)
    emails = "email" if count == 1 else "emails"
    renewed = requeued.with_new_key
    under_new_keys = f" ({renewed} under a new idempotency key)" if renewed else ""
    click.echo(f"Put back {count} failed {emails}, to be sent on the next pass{under_new_keys}.")
    if skipped := sorted(set(ids) - set(requeued.ids)):
        why = "not failed, or withdrawn"
        if queued_within:
            why = f"not failed, withdrawn, or queued over {queued_within.text} ago"
        click.echo(f"Left as they are ({why}): {', '.join(map(str, skipped))}.")


@emails_cli.command("erase-sent")
@click.option(
    "--older-than",
    "older_than",
    default="90d",
    type=AGE_TYPE,
    show_default=True,
    help="Erase what emails sent longer ago than this said: Nd (days) or Nh (hours).",
)
def erase_sent_command(older_than: Age) -> None:
    """Erase the bodies of emails sent a while ago (they hold shoppers' names, addresses and
    what they bought). That each was sent, to whom and when stays on its order's timeline;
    waiting and failed emails are left whole."""
    erased = erase_sent_bodies(db.session, sent_before=utcnow() - older_than.span)
    db.session.commit()
    emails = "email" if erased == 1 else "emails"
    click.echo(f"Erased {erased} sent {emails} (sent more than {older_than.text} ago).")


@carts_cli.command("purge")
@click.option(
    "--older-than",
    "older_than",
    default="60d",
    type=AGE_TYPE,
    show_default=True,
    help="Remove guest bags untouched for this long: Nd (days) or Nh (hours).",
)
def purge_carts_command(older_than: Age) -> None:
    """Remove abandoned guest bags. Account bags and bags being paid for are never touched."""
    idle_since, removed = utcnow() - older_than.span, 0
    while True:  # a batch a transaction: a year of abandoned bags is one run too
        batch = purge_guest_carts(db.session, idle_since=idle_since)
        db.session.commit()
        removed += batch
        if batch < PURGE_BATCH:
            break
    bags = "bag" if removed == 1 else "bags"
    click.echo(f"Removed {removed} abandoned guest {bags} (untouched for {older_than.text}).")


@analytics_cli.command("prune")
@click.option(
    "--older-than",
    "older_than",
    default="180d",
    type=AGE_TYPE,
    show_default=True,
    help="Delete product views older than this: Nd (days) or Nh (hours).",
)
def prune_views_command(older_than: Age) -> None:
    """Delete old product views (recently viewed, trending and the dashboard read the rest)."""
    removed = views.prune(db.session, older_than=utcnow() - older_than.span)
    db.session.commit()
    noun = "view" if removed == 1 else "views"
    click.echo(f"Removed {removed} product {noun} (older than {older_than.text}).")


# A stale order whose settling raised (rolled back and logged): the sweep goes on without it.
FAILED = "failed"


@orders_cli.command("expire-stale")
@click.option(
    "--grace-minutes",
    default=10,
    show_default=True,
    type=click.IntRange(0, 24 * 60),
    help="How long after its payment page expired an order waits for Stripe's own event.",
)
@click.option(
    "--batch",
    default=200,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="How many orders are read at a time (every order due is looked at in each run).",
)
def expire_stale_command(grace_minutes: int, batch: int) -> None:
    """Cancel PENDING orders whose payment page expired unpaid (closing it at Stripe first)
    and release their stock; apply a payment Stripe's record shows whose event never came;
    flag for staff a payment page Stripe doesn't know, and a bank payment overdue by days.
    Safe to run every minute, on several hosts at once. An order that fails is logged and the
    others go on; the command then exits non-zero."""
    outcomes: dict[str, int] = {}
    cutoff = utcnow() - timedelta(minutes=grace_minutes)
    after: int | None = None
    while order_ids := stale_order_ids(db.session, expired_before=cutoff, after=after, limit=batch):
        settled = [_sweep_stale(order_id) for order_id in order_ids]
        for outcome in settled:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if all(outcome == Settled.UNREACHABLE for outcome in settled):
            break  # Stripe is down: the rest are asked about in the next run
        # The next batch starts after this one, so orders left as they were (one that failed,
        # say) never hide newer ones, however many there are.
        after = order_ids[-1]
    summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
    click.echo(f"Stale checkouts: {summary or 'none'}.")
    if unknown := outcomes.get(Settled.UNKNOWN, 0):
        click.echo(f"Payment pages Stripe doesn't know: {unknown} flagged for staff.")
    overdue = failed = 0
    after = None
    while order_ids := overdue_bank_payment_ids(
        db.session, started_before=utcnow() - BANK_PAYMENT_OVERDUE, after=after, limit=batch
    ):
        for order_id in order_ids:
            try:
                overdue += flag_overdue_bank_payment(db.session, order_id)
                db.session.commit()
            except Exception:
                db.session.rollback()
                logger.exception("Could not flag the overdue bank payment of order %s", order_id)
                failed += 1
        after = order_ids[-1]
    if overdue or failed:
        failures = f", {failed} failed" if failed else ""
        click.echo(f"Bank payments overdue: {overdue} flagged for staff{failures}.")
    failed += outcomes.get(FAILED, 0)
    if failed:
        noun = "order" if failed == 1 else "orders"
        raise click.ClickException(
            f"{failed} {noun} could not be looked at (see the log); the next run tries again."
        )


def _sweep_stale(order_id: int) -> str:
    """Settle one stale order in a transaction of its own; what became of it."""
    try:
        settled, page = sweep_stale_order(db.session, order_id)
        if settled is Settled.FLAGGED and payments.paid_without_its_event(
            db.session, order_id, page
        ):
            settled = Settled.PAID
        db.session.commit()
    except Exception:
        db.session.rollback()
        logger.exception("Could not settle stale order %s", order_id)
        return FAILED
    return settled.value


@catalog_cli.command("sync")
@click.option(
    "--allow-mass-unpublish",
    is_flag=True,
    help="Unpublish what Sanity no longer lists even when that is more than half of the pieces "
    "(or collections) on sale: once the studio really took them away.",
)
def catalog_sync_command(allow_mass_unpublish: bool) -> None:
    """Pull every collection and product from Sanity and upsert them (one transaction per
    document; a malformed one is skipped with its reason). Pieces Sanity no longer has are
    unpublished, never deleted; more than half of those on sale at once only when told
    (--allow-mass-unpublish), else none of them, and the run exits 1 saying so. Reading Sanity
    stops after SANITY_SYNC_TIMEOUT_SECONDS (the run then exits 1, nothing unpublished). Safe
    to run again, and on several hosts at once."""
    if not sanity.configured():
        raise click.ClickException(
            "Sanity is not configured: set SANITY_PROJECT_ID and SANITY_DATASET "
            "(without them the built-in catalogue serves; see `flask seed`)."
        )
    seconds = current_app.config["SANITY_SYNC_TIMEOUT_SECONDS"]
    deadline = time.monotonic() + seconds
    try:
        report = catalog_sync.sync_all(
            db.session,
            sanity.iter_documents("collection", deadline=deadline),
            sanity.iter_documents("product", deadline=deadline),
            currency=current_app.config["SHOP_CURRENCY"],
            allow_mass_unpublish=allow_mass_unpublish,
        )
    except sanity.SanityDeadlineError as error:
        db.session.rollback()
        raise click.ClickException(
            f"The sync ran out of time (SANITY_SYNC_TIMEOUT_SECONDS: {seconds} s) before Sanity "
            f"had given every document: {error}. What was written stays; nothing was "
            "unpublished. Run the sync again later."
        ) from error
    except sanity.SanityError as error:
        db.session.rollback()
        raise click.ClickException(
            f"Sanity could not be read ({error}). What was synced before stays; "
            "nothing was unpublished. Run the sync again later."
        ) from error
    click.echo(f"Catalogue synced from Sanity: {report}.")
    for skipped in report.skipped:
        click.echo(f"Skipped {skipped}")
    if report.held_back:
        raise click.ClickException(
            "; ".join(str(held) for held in report.held_back)
            + ": more than half of them at once, so none was unpublished (a read token that "
            "lost access, a dataset being restored?). What Sanity listed was written. If the "
            "studio really took them away, run `flask catalog sync --allow-mass-unpublish`."
        )


@catalog_cli.command("apply-changes")
@click.option("--limit", default=100, show_default=True, help="Most changes to apply in this run.")
@click.option(
    "--now",
    "everything_now",
    is_flag=True,
    help="Also apply the changes still waiting for their next try (once an outage is over).",
)
def apply_changes_command(limit: int, everything_now: bool) -> None:
    """Apply the changes Sanity announced that are due: those its webhook could not apply at
    once (Sanity down, a worker stopped) are retried with a growing delay. For cron, every
    minute; safe on several hosts at once."""
    if not sanity.configured():
        raise click.ClickException(
            "Sanity is not configured: set SANITY_PROJECT_ID and SANITY_DATASET."
        )
    report = catalog_changes.apply_due(
        db.session,
        fetch=sanity.fetch_document,
        currency=current_app.config["SHOP_CURRENCY"],
        limit=limit,
        now=catalog_changes.EVERYTHING if everything_now else None,
    )
    click.echo(f"Changes from Sanity: {report}.")


def register(app: Flask) -> None:
    app.cli.add_command(seed_command)
    app.cli.add_command(create_staff_command)
    app.cli.add_command(revoke_staff_command)
    app.cli.add_command(emails_cli)
    app.cli.add_command(carts_cli)
    app.cli.add_command(orders_cli)
    app.cli.add_command(analytics_cli)
    app.cli.add_command(catalog_cli)
