"""``python -m devtools.fake_stripe``: the fake Stripe in the foreground, for the local demo.

Point the shop at it with ``stripe.api_base``/``base_addresses={"api": ...}`` = the printed
URL and any ``sk_test_...`` key; its events go to ``--webhook-url`` signed with
``--webhook-secret``. Open sessions past their ``expires_at`` are expired every
``--expire-every`` seconds (Stripe does this on its own).
"""

from __future__ import annotations

import argparse
import os
import threading

from .server import FakeStripeServer
from .state import DEFAULT_ENABLED_EVENTS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.fake_stripe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--webhook-url", default=os.environ.get("FAKE_STRIPE_WEBHOOK_URL"))
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("FAKE_STRIPE_WEBHOOK_SECRET", "whsec_fake_stripe_local_demo"),
    )
    parser.add_argument(
        "--events",
        default=",".join(sorted(DEFAULT_ENABLED_EVENTS)),
        help="comma-separated event types to deliver ('*' for every type the fake emits)",
    )
    parser.add_argument("--expire-every", type=float, default=30.0)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    server = FakeStripeServer(
        args.host,
        args.port,
        quiet=not args.verbose,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        enabled_events={e.strip() for e in args.events.split(",") if e.strip()},
        on_delivery=lambda d: print(
            f"webhook {d.type} {d.event_id} -> {d.status or d.error}", flush=True
        ),
    )
    stopping = threading.Event()
    with server:
        print(f"Fake Stripe (development only) on {server.base_url}", flush=True)
        print(f"  API base: {server.base_url}   key: any sk_test_... key", flush=True)
        print(
            f"  webhooks: {args.webhook_url or '(none)'}  secret: {args.webhook_secret}", flush=True
        )
        print(f"  sessions: {server.base_url}/", flush=True)
        try:
            while not stopping.wait(args.expire_every):
                server.app.expire_due_sessions()  # each delivery is printed
        except KeyboardInterrupt:
            print("stopping", flush=True)


if __name__ == "__main__":
    main()
