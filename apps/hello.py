"""The smallest useful WSGI app: what every stage serves when given no app.

A WSGI app is a callable taking the request as a dict (``environ``) and a
``start_response`` function; it calls ``start_response`` with the status and
headers, and returns an iterable of bytes: the body.
"""

BODY = b"Hello, World!\n"


def application(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]
