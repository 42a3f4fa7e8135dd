"""The lab's /counter, fixed two ways (stage 6's exercise 1).

    cargo run --release -p stage6-asgi -- --wsgi-file book/examples/asgi_counter.py

/locked holds an asyncio.Lock across the read, the await and the write;
/atomic does the read-modify-write with no await in the middle.
"""

import asyncio

counter = 0
lock = asyncio.Lock()


async def app(scope, receive, send):
    global counter
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/locked":
        async with lock:  # the other tasks wait here, at an await
            seen = counter
            await asyncio.sleep(0.001)
            counter = seen + 1
    elif path == "/atomic":
        await asyncio.sleep(0.001)  # the waiting, before
        counter += 1  # no await between the read and the write
    elif path == "/reset":
        counter = 0
    body = b"%d\n" % counter
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
