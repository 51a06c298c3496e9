"""What the benchmark's and the soak's shoppers send to say they are a browser.

Without a user agent (wrk sends none) or with a library's own (``python-requests/…``), the
shop takes the client for a robot: it gets no visitor cookie, its product pages record no view
and read no "Recently viewed", and its bag shows none. A shopper's pages do all of that.
"""

from collections.abc import Iterator

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def browsers_without_bags(secret_key: str, count: int) -> Iterator[tuple[str, str]]:
    """``count`` browsers that have opened a product page and have no bag yet: each one's
    session cookie (its value) and the CSRF token drawn for it, signed as the shop signs them
    (its session interface, Flask-WTF). A browser's session makes one bag however many adds
    it sends, so a measure of first adds needs a browser for each; drawing them here is much
    quicker than asking the shop for each."""
    from flask import Flask, session
    from flask_wtf.csrf import generate_csrf

    from elysium.web.sign_in import PublicAwareSessionInterface

    signer = Flask("bench-browsers")
    signer.secret_key = secret_key
    signer.session_interface = PublicAwareSessionInterface()
    serializer = signer.session_interface.get_signing_serializer(signer)
    for _ in range(count):
        with signer.test_request_context():
            token = generate_csrf()
            yield serializer.dumps(dict(session)), token
