"""Small helpers for answering htmx and plain requests from the same view."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, make_response, render_template, request


def is_htmx() -> bool:
    """An htmx request that expects a fragment (a history restore wants the whole page)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


def render(
    page_template: str,
    fragment_template: str,
    /,
    status: int = 200,
    *,
    finish: Callable[[str], str] | None = None,
    **context,
) -> Response:
    """The full page for a browser, the fragment for htmx; one URL, two renderings. ``finish``
    is given either as drawn (to put in what differs per shopper)."""
    template = fragment_template if is_htmx() else page_template
    body = render_template(template, **context)
    if finish is not None:
        body = finish(body)
    response = make_response(body, status)
    response.vary.add("HX-Request")
    return response


def htmx_redirect(location: str) -> Response:
    """htmx never receives a 3xx: it is told where to go with ``HX-Redirect``."""
    response = make_response("", 204)
    response.headers["HX-Redirect"] = location
    return response


def fragments(*parts: str, status: int = 200) -> Response:
    """Several rendered fragments (out-of-band ones included) as one htmx response."""
    response = make_response("".join(parts), status)
    response.vary.add("HX-Request")
    return response


def notice(message: str, *, error: bool = False) -> str:
    """The page's ``#messages`` region, updated out of band: what the live region announces."""
    return render_template("partials/_notice.html", message=message, error=error)


def personal_pages(blueprint: Blueprint) -> None:
    """Every response of this blueprint is one person's: never cached, and it varies on htmx."""

    @blueprint.after_request
    def not_cached(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("HX-Request")
        return response
