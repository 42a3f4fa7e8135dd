"""An app that takes a while to import, like a big Django project does.

The tests use it to send a signal while a server is still starting: a
Ctrl-C pressed then must stop the server, not be lost.
"""

import os
import time

time.sleep(float(os.environ.get("SLOW_START_SECONDS", "1")))


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ready\n"]


async def asgi_app(scope, receive, send):
    """The same, for stage 6 and `stage3-prefork -k asgi`."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ready\n"})
