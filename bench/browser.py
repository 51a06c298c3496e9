"""What the benchmark's and the soak's shoppers send to say they are a browser.

Without a user agent (wrk sends none) or with a library's own (``python-requests/…``), the
shop takes the client for a robot: it gets no visitor cookie, its product pages record no view
and read no "Recently viewed", and its bag shows none. A shopper's pages do all of that.
"""

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
