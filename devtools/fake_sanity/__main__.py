"""``python -m devtools.fake_sanity``: the Sanity stand-in in the foreground, for the demo.

Point the shop at it with SANITY_API_HOST = the printed URL, SANITY_PROJECT_ID and
SANITY_DATASET as printed, and SANITY_WEBHOOK_SECRET = ``--webhook-secret``; then
``flask catalog sync``. To see a webhook happen, change a piece (the stand-in then signs and
sends the webhook to ``--webhook-url``):

    curl -X POST <url>/_fake/documents/product-aurelia-solitaire-ring \\
         -H 'Content-Type: application/json' \\
         -d '{"title": "Aurelia Solitaire", "basePrice": 199000}'
    curl -X DELETE <url>/_fake/documents/product-aurelia-solitaire-ring
"""

from __future__ import annotations

import argparse
import os
import threading

from .app import DEFAULT_WEBHOOK_SECRET
from .dataset import DATASET, PROJECT_ID
from .server import FakeSanityServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.fake_sanity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12112)
    parser.add_argument("--project-id", default=PROJECT_ID)
    parser.add_argument("--dataset", default=DATASET)
    parser.add_argument(
        "--webhook-url",
        default=os.environ.get("FAKE_SANITY_WEBHOOK_URL", "http://127.0.0.1:5000/webhooks/sanity"),
    )
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("FAKE_SANITY_WEBHOOK_SECRET", DEFAULT_WEBHOOK_SECRET),
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the stand-in only listens on a loopback address")

    server = FakeSanityServer(
        args.host,
        args.port,
        quiet=not args.verbose,
        project_id=args.project_id,
        dataset=args.dataset,
        webhook_url=args.webhook_url or None,
        webhook_secret=args.webhook_secret,
    )
    with server:
        print(f"Sanity stand-in (development only) on {server.base_url}", flush=True)
        print(f"  SANITY_API_HOST={server.base_url}", flush=True)
        print(f"  SANITY_PROJECT_ID={args.project_id}  SANITY_DATASET={args.dataset}", flush=True)
        print(f"  webhooks: {args.webhook_url or '(none)'}  secret: {args.webhook_secret}")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopping", flush=True)


if __name__ == "__main__":
    main()
