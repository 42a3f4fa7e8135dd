"""The smallest useful ASGI app: what stage 6 serves when given no app.

An ASGI app is an async function called with the request (``scope``, a dict)
and two awaitables: ``receive`` (the request body, disconnects) and ``send``
(the response: first its status and headers, then its body).
"""

BODY = b"Hello, World!\n"
HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"14")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan, no WebSocket: the server carries on without
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
