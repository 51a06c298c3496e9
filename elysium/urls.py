"""Building URLs: absolute ones on ``SITE_URL``, and the current page's with its query changed.

Every absolute link the shop hands out (emails, the sitemap, robots.txt, canonical links,
Stripe's return pages, Google's redirect) is built on ``SITE_URL``, never on the ``Host``
header a request came with, which the sender chooses. Requests for a host the shop does not
know are refused (``TRUSTED_HOSTS``).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask, current_app, request, url_for
from flask.globals import request_ctx
from werkzeug.exceptions import HTTPException, SecurityError
from werkzeug.routing import IntegerConverter

from elysium.config import site_url, trusted_hosts
from elysium.ids import MAX_ID

# A load balancer's health check usually names the server by its private address, which no
# list of host names can know in advance; /healthz shows no link and nothing personal.
ANY_HOST_ENDPOINTS = frozenset({"site.healthz"})


def is_loopback_url(url: str) -> bool:
    """Whether the URL's host is this machine (``localhost`` or a loopback address): where a
    stand-in for an outside service (Stripe, Sanity) may be, and nowhere else."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def absolute_url(endpoint: str, **values: Any) -> str:
    """``endpoint``'s URL on ``SITE_URL``, in a request or outside one (a command, a worker)."""
    site = urlsplit(current_app.config["SITE_URL"])
    adapter = current_app.url_map.bind(
        site.netloc, url_scheme=site.scheme, script_name=site.path or "/"
    )
    return adapter.build(endpoint, values, force_external=True)


def modify_query(**changes: Any) -> str:
    """The current URL's query string with some parameters changed (``None`` removes one).

    The query is joined to the path as it is, never handed to ``url_for`` as keywords: a
    parameter named ``endpoint``, ``_method`` or ``_external`` is anyone's to send, and would
    be taken for one of ``url_for``'s own."""
    args = request.args.to_dict()
    for name, value in changes.items():
        if value is None or value == "":
            args.pop(name, None)
        else:
            args[name] = str(value)
    path = url_for(request.endpoint or "shop.listing", **(request.view_args or {}))
    return f"{path}?{urlencode(args)}" if args else path


def digits_up_to(limit: int) -> str:
    """A regular expression for the whole numbers from 0 to ``limit``, written in digits."""
    text = str(limit)
    alternatives = [rf"\d{{1,{len(text) - 1}}}"] if len(text) > 1 else []
    for position, digit in enumerate(text):
        lowest = "1" if position == 0 and len(text) > 1 else "0"  # no leading zero
        if digit > lowest:
            highest = str(int(digit) - 1)
            below = highest if highest == lowest else f"[{lowest}-{highest}]"
            alternatives.append(rf"{text[:position]}{below}\d{{{len(text) - position - 1}}}")
    return "|".join([*alternatives, text])


class IdConverter(IntegerConverter):
    """``<int:…>`` in every URL of the shop's: a whole number an id can be. A larger one
    matches no rule, so it is a 404 like any id that names nothing (given to the database it
    would be an error; refused by the converter after matching, a 405 where the same path
    takes another method)."""

    regex = f"(?:{digits_up_to(MAX_ID)})"


def init_app(app: Flask) -> None:
    """Check ``SITE_URL`` and settle ``TRUSTED_HOSTS``: the app refuses to start without them.
    Every ``<int:…>`` in a URL rule is an id (:class:`IdConverter`; set before any rule is).

    Flask applies ``TRUSTED_HOSTS`` to the host the request was actually sent to (after
    ``ProxyFix`` has applied ``X-Forwarded-Host``). Call this before any extension registers
    its ``before_request`` hooks, so that a refused host is answered before any of them runs.
    """
    production = app.config["ELYSIUM_ENV"] == "production"
    app.config["SITE_URL"] = site_url(app.config.get("SITE_URL"), production)
    app.config["TRUSTED_HOSTS"] = trusted_hosts(
        app.config["SITE_URL"], app.config.get("TRUSTED_HOSTS"), production
    )
    app.url_map.converters["int"] = IdConverter
    app.before_request(refuse_untrusted_host)


def refuse_untrusted_host() -> None:
    """Answer a request for an unknown host with the 400 page (only /healthz answers any host).

    Flask records the refusal as the request's routing exception and leaves the request
    without a URL adapter, so even the error page could not link to its stylesheet. The
    request is given one bound to ``SITE_URL``'s host: pages drawn for it use relative links.
    """
    refusal = request.routing_exception
    if not isinstance(refusal, SecurityError):
        return
    adapter = current_app.url_map.bind_to_environ(
        request.environ, server_name=urlsplit(current_app.config["SITE_URL"]).netloc, subdomain=""
    )
    request_ctx.url_adapter = adapter
    try:
        rule, view_args = adapter.match(return_rule=True)
    except HTTPException:
        rule = None
    if rule is not None and rule.endpoint in ANY_HOST_ENDPOINTS:
        request.url_rule, request.view_args = rule, view_args
        request.routing_exception = None
        return
    # Worth seeing in the log after a deploy: a missing TRUSTED_HOSTS entry looks like this.
    current_app.logger.info(
        "Refused a request for host %r (neither SITE_URL's host nor in TRUSTED_HOSTS)",
        request.environ.get("HTTP_HOST"),
    )
    # The 400 page must not read a query string the edge check never got to look at.
    request.query_string = b""
    raise refusal


def same_site_path(url: str | None) -> str | None:
    """The path (and query) of ``url`` if it is on this site (a ``Referer``, say); None for
    another site's, or for one that doesn't parse (``http://[oops``: a header is anyone's)."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.netloc and parts.netloc != request.host:
        return None
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return path
