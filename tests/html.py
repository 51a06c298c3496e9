"""Read the shop's HTML the way a browser does: through a parser, never with regexes, so a test
breaks when the page changes for a shopper, not when attributes change order.

    page = Page(response)                   # a test response, or a string of HTML
    page.select("form.wishlist-heart")      # every element a CSS selector matches
    page.one("#bag-count")                  # exactly one match, or the test fails
    page.top()                              # the top-level elements (what a fragment is)
    elements(response, "a[rel=next]")       # page.select, from any source
    text_of(page, "h1.product__name")       # text, entities decoded, whitespace collapsed
    bag_count(page)                         # the header's bag count, as a number
    field_error(page, "engraving")          # the message next to a field ("" when none)
    hearts(page)                            # {product id: saved?} for every wishlist heart
    form_fields(page, "form.configurator")  # {name: value} the form would submit
    csrf_token(response)                    # the token htmx sends (<body hx-headers>)

The helpers take a ``Page``, an element from one, a response or a string.
"""

from __future__ import annotations

import json
import warnings
from html.parser import HTMLParser
from typing import Protocol, TypeAlias

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag


class _Response(Protocol):
    def get_data(self, as_text: bool = ...) -> str: ...


Source: TypeAlias = "Page | Tag | _Response | str"


class Page:
    """A parsed page or fragment."""

    def __init__(self, source: _Response | str):
        self.html = source if isinstance(source, str) else source.get_data(as_text=True)
        with warnings.catch_warnings():
            # A short fragment can look like a file name to Beautiful Soup; it is markup here.
            warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
            self.soup = BeautifulSoup(self.html, "html.parser")

    def select(self, css: str) -> list[Tag]:
        return list(self.soup.select(css))

    def one(self, css: str) -> Tag:
        found = self.select(css)
        assert len(found) == 1, f"{len(found)} elements match {css!r}"
        return found[0]

    def top(self) -> list[Tag]:
        return [child for child in self.soup.children if isinstance(child, Tag)]


def _root(source: Source) -> Tag:
    if isinstance(source, Tag):
        return source
    page = source if isinstance(source, Page) else Page(source)
    return page.soup


def elements(source: Source, css: str) -> list[Tag]:
    """Every element the CSS selector matches."""
    return list(_root(source).select(css))


def _one(source: Source, css: str) -> Tag:
    found = _root(source).select(css)
    assert len(found) == 1, f"{len(found)} elements match {css!r}"
    return found[0]


def text_of(source: Source, css: str | None = None) -> str:
    """The text of the one element ``css`` matches (or of the whole source), as a shopper
    reads it: entities decoded, runs of whitespace made one space."""
    element = _one(source, css) if css else _root(source)
    return " ".join(element.get_text().split())


def bag_count(source: Source) -> int:
    """The number in the header's bag count (``#bag-count``)."""
    return int(text_of(source, "#bag-count").split()[0])


def field_error(source: Source, name: str) -> str:
    """The message shown next to the field ``name`` (its ``#error-<name>``), "" when none."""
    return text_of(source, f"#error-{name}")


def hearts(source: Source) -> dict[int, bool]:
    """Product id -> whether its wishlist heart is pressed (saved), for every heart shown."""
    states: dict[int, bool] = {}
    for button in _root(source).select("form.wishlist-heart button.wishlist-heart__button"):
        product_id = int(str(button["id"]).rsplit("-", 1)[1])
        pressed = button["aria-pressed"] == "true"
        assert states.get(product_id, pressed) == pressed, f"two hearts disagree: {product_id}"
        states[product_id] = pressed
    return states


def form_fields(source: Source, css: str | None = None) -> dict[str, str]:
    """What the form would submit without JavaScript (so <noscript> fields count), buttons
    aside: checked boxes, chosen options, typed values. The form is the one ``css`` matches,
    else the source itself when it is an element, else the page's only form."""
    form = source if css is None and isinstance(source, Tag) else _one(source, css or "form")
    fields: dict[str, str] = {}
    for control in form.select("input[name], select[name], textarea[name]"):
        if control.has_attr("disabled"):
            continue
        name = str(control["name"])
        if control.name == "select":
            options = control.select("option")
            chosen = [o for o in options if o.has_attr("selected")] or options[:1]
            if chosen:
                fields[name] = str(chosen[-1].get("value", chosen[-1].get_text()))
        elif control.name == "textarea":
            # A browser drops the one line break that may open a textarea's text.
            text = control.get_text()
            fields[name] = text[2:] if text.startswith("\r\n") else text.removeprefix("\n")
        else:
            kind = str(control.get("type", "text")).lower()
            if kind in {"submit", "button", "reset", "image", "file"}:
                continue
            if kind in {"checkbox", "radio"} and not control.has_attr("checked"):
                continue
            fields[name] = str(control.get("value", "on" if kind in {"checkbox", "radio"} else ""))
    return fields


class _BodyHeaders(HTMLParser):
    """Reads up to <body> and no further: the ShopClient looks at every page it opens."""

    def __init__(self) -> None:
        super().__init__()
        self.body_seen = False
        self.headers: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body" and not self.body_seen:
            self.body_seen = True
            self.headers = dict(attrs).get("hx-headers")


def csrf_token(source: Page | _Response | str) -> str | None:
    """The CSRF token htmx sends with every request (``hx-headers`` on <body>), if the source
    is a whole page."""
    if isinstance(source, Page):
        html = source.html
    else:
        html = source if isinstance(source, str) else source.get_data(as_text=True)
    parser = _BodyHeaders()
    for start in range(0, len(html), 4096):
        parser.feed(html[start : start + 4096])
        if parser.body_seen:
            break
    if not parser.headers:
        return None
    return json.loads(parser.headers).get("X-CSRFToken")
