"""The ASGI lab app (stage 6): one route per experiment, no dependencies.

    /               hello
    /cpu?ms=N       N milliseconds of pure-Python work (holds the loop)
    /io?ms=N        await asyncio.sleep(N ms): waiting, the loop serves others
    /block?ms=N     time.sleep(N ms) inside async def: the pitfall, the whole loop stops
    /block/thread?ms=N    the fix: the same time.sleep in a thread (asyncio.to_thread)
    /block/executor?ms=N  the same fix with loop.run_in_executor (before Python 3.9)
    /counter        a global read, an await, a write: loses updates under concurrency
    /counter/reset  sets the counter back to 0
    /echo           the request body back (read whole first, like apps/lab.py)
    /echo/stream    the request body streamed back as it arrives (chunked):
                    a large upload is never held whole
    /upload?ms=N    counts the body, sleeping N ms after each piece (a slow
                    consumer: the server must stop reading, not buffer the body)
    /download?mb=N  N MiB streamed in 64 KiB body messages (back-pressure: a slow
                    client makes send() wait instead of filling the server's memory)
    /sse            server-sent events, one every 100 ms until the client leaves
    /sse/stats      how many /sse streams ended because the client left
    /scope          the scope the server built, as JSON (bytes as latin-1 text)
    /lifespan       what the lifespan scope recorded (startup time, request count)
    /ws             WebSocket echo (text and binary; "close:CODE" closes with CODE)
    /chat           WebSocket broadcast: every message goes to every client
    /ws/reject      a WebSocket the app refuses (403)
    /task?ms=N      the asyncio task running the request, before and after
                    an N ms wait, and whether a ContextVar set by an earlier
                    request leaked into this one (as JSON)
    /pid            the worker's process id

And the routes the cross-stage conformance suite asks of every stage
(apps/lab.py has their WSGI twins):

    /environ...     the WSGI environ a WSGI-on-ASGI adapter would build from
                    this scope (as asgiref's WsgiToAsgi does, with gunicorn's
                    header rules), as JSON
    /lines?mode=M   the body split into lines, as JSON
    /file           apps/lab.py, streamed in 1 KiB pieces with a Content-Length
    /stream?n=N     N chunks (no Content-Length: chunked on HTTP/1.1)
    /bytes?n=N      N bytes in one body message
    /error          raises before http.response.start (the server answers 500)
    /error-late     raises after the first chunk (the server closes the connection)
"""

import asyncio
import contextvars
import io
import json
import os
import time
import urllib.parse

HELLO = b"Hello, World!\n"
counter = 0
lifespan_log = {"startup": None, "requests": 0, "shutdown": None}
sse_left = 0
chat_clients = set()
# Set by /task: each request must start with its default (its own context).
request_mark = contextvars.ContextVar("request_mark", default=None)


def _query(scope):
    return dict(urllib.parse.parse_qsl(scope["query_string"].decode("latin-1")))


def _int(params, name, default):
    try:
        return int(params.get(name, default))
    except ValueError:
        return default


async def respond(send, body, content_type=b"text/plain; charset=utf-8", status=200):
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
    })
    await send({"type": "http.response.body", "body": body})


async def read_body(receive):
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client left before sending its whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def cpu(ms):
    deadline = time.thread_time() + ms / 1000.0
    n = 0
    while time.thread_time() < deadline:
        for i in range(200):
            n += i * i
    return n


def as_text(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()}
    return value


def environ_from_scope(scope, body):
    """The environ a WSGI app would get through a WSGI-on-ASGI adapter
    (asgiref's WsgiToAsgi), with gunicorn's rules for headers: names with
    underscores are dropped (they would be indistinguishable from dashes),
    repeated headers are joined with "," (cookies with "; ")."""
    path = urllib.parse.unquote_to_bytes(scope["raw_path"]).decode("latin-1")
    query = scope["query_string"].decode("latin-1")
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", ""),
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "RAW_URI": scope["raw_path"].decode("latin-1") + ("?" + query if query else ""),
        "REQUEST_URI": scope["raw_path"].decode("latin-1") + ("?" + query if query else ""),
        "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": "stderr",
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    if scope.get("client"):
        environ["REMOTE_ADDR"], port = scope["client"]
        environ["REMOTE_PORT"] = str(port)
    if scope.get("server"):
        environ["SERVER_NAME"], port = scope["server"]
        environ["SERVER_PORT"] = str(port)
    for name, value in scope["headers"]:
        name = name.decode("latin-1")
        value = value.decode("latin-1")
        if "_" in name:
            continue
        if name == "content-length":
            key = "CONTENT_LENGTH"
        elif name == "content-type":
            key = "CONTENT_TYPE"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        if key in environ:
            environ[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            environ[key] = value
    return environ


def environ_as_json(environ):
    plain = {}
    for key, value in environ.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            plain[key] = value
        elif isinstance(value, tuple):
            plain[key] = list(value)
        else:
            plain[key] = type(value).__name__
    plain["wsgi.input.body"] = environ["wsgi.input"].getvalue().decode("latin-1")
    return json.dumps(plain, sort_keys=True).encode()


def split_lines(body, mode):
    stream = io.BytesIO(body)
    if mode == "readline":
        lines = [stream.readline(3), stream.readline()]
        while True:
            line = stream.readline()
            if not line:
                break
            lines.append(line)
    elif mode == "readlines":
        lines = stream.readlines()
    else:
        lines = list(stream)
    return json.dumps([line.decode("latin-1") for line in lines]).encode()


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            lifespan_log["startup"] = time.time()
            scope["state"]["started_at"] = lifespan_log["startup"]
            if os.environ.get("ASGI_LAB_FAIL_STARTUP"):
                await send({"type": "lifespan.startup.failed", "message": "ASGI_LAB_FAIL_STARTUP is set"})
                return
            print("lab: lifespan startup", flush=True)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            lifespan_log["shutdown"] = time.time()
            print(f"lab: lifespan shutdown after {lifespan_log['requests']} requests", flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def echo(receive, send):
    """Streams the body back as it arrives: never holds it whole."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        total += len(body)
        more = message.get("more_body", False)
        await send({"type": "http.response.body", "body": body, "more_body": more})
        if not more:
            return


async def task_identity(params, send):
    leftover = request_mark.get()
    request_mark.set("set by an earlier request")
    before = asyncio.current_task()
    ms = _int(params, "ms", 0)
    if ms:
        await asyncio.sleep(ms / 1000)
    after = asyncio.current_task()
    report = {
        "before": before.get_name() if before else None,
        "after": after.get_name() if after else None,
        "same": before is after,
        "leftover": leftover,
    }
    return await respond(send, json.dumps(report).encode() + b"\n", b"application/json")


async def sse(receive, send):
    global sse_left
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    left = asyncio.Event()

    async def watch():
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                left.set()
                return

    watcher = asyncio.ensure_future(watch())
    n = 0
    try:
        while not left.is_set():
            try:
                await send({"type": "http.response.body", "body": b"data: event %d\n\n" % n, "more_body": True})
            except OSError:
                break
            n += 1
            try:
                await asyncio.wait_for(left.wait(), 0.1)
            except asyncio.TimeoutError:
                pass
    finally:
        watcher.cancel()
        sse_left += 1
        print(f"lab: /sse client left after {n} events", flush=True)


async def websocket(scope, receive, send):
    path = scope["path"]
    message = await receive()
    assert message["type"] == "websocket.connect"
    if path == "/ws/reject":
        await send({"type": "websocket.close", "code": 1008})
        return
    subprotocol = scope["subprotocols"][0] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol,
                "headers": [(b"x-lab", b"websocket")]})
    if path == "/chat":
        chat_clients.add(send)
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                for client in list(chat_clients):
                    try:
                        await client({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
                    except Exception:  # noqa: BLE001 - a client that left
                        chat_clients.discard(client)
        finally:
            chat_clients.discard(send)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            print(f"lab: websocket disconnect {message['code']}", flush=True)
            return
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            await send({"type": "websocket.close", "code": int(text[6:]), "reason": "asked"})
            return
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes")})


async def app(scope, receive, send):
    global counter
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] == "websocket":
        return await websocket(scope, receive, send)
    lifespan_log["requests"] += 1
    path = scope["path"]
    params = _query(scope)

    if path == "/":
        return await respond(send, HELLO)
    if path == "/cpu":
        cpu(_int(params, "ms", 1))
        return await respond(send, b"cpu done\n")
    if path == "/io":
        await asyncio.sleep(_int(params, "ms", 10) / 1000.0)
        return await respond(send, b"io done\n")
    if path == "/block":
        time.sleep(_int(params, "ms", 100) / 1000.0)  # the pitfall: blocks the loop
        return await respond(send, b"blocked the loop\n")
    if path == "/block/thread":
        # The blocking call runs in the default thread pool; this coroutine
        # waits for it like any other future, and the loop serves others.
        await asyncio.to_thread(time.sleep, _int(params, "ms", 100) / 1000)
        return await respond(send, b"blocked a thread, not the loop\n")
    if path == "/block/executor":
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, time.sleep, _int(params, "ms", 100) / 1000)
        return await respond(send, b"blocked a thread, not the loop\n")
    if path == "/counter":
        seen = counter
        await asyncio.sleep(0.001)
        counter = seen + 1
        return await respond(send, b"%d\n" % counter)
    if path == "/counter/reset":
        counter = 0
        return await respond(send, b"0\n")
    if path == "/echo":
        body = await read_body(receive)
        content_type = dict(scope["headers"]).get(b"content-type", b"application/octet-stream")
        return await respond(send, body, content_type)
    if path == "/echo/stream":
        return await echo(receive, send)
    if path == "/upload":
        delay = _int(params, "ms", 1) / 1000.0
        total = pieces = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            total += len(message.get("body", b""))
            pieces += 1
            await asyncio.sleep(delay)
            if not message.get("more_body", False):
                break
        return await respond(send, b"%d bytes in %d pieces\n" % (total, pieces))
    if path == "/download":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        block = bytes(range(256)) * 256
        for _ in range(_int(params, "mb", 1) * 16):
            await send({"type": "http.response.body", "body": block, "more_body": True})
        return await send({"type": "http.response.body", "body": b""})
    if path == "/sse":
        return await sse(receive, send)
    if path == "/sse/stats":
        return await respond(send, b"%d\n" % sse_left)
    if path == "/scope":
        body = await read_body(receive)
        shown = {k: as_text(v) for k, v in scope.items() if k != "state"}
        shown["state"] = sorted(scope.get("state", {}))
        shown["body"] = body.decode("latin-1")
        return await respond(send, json.dumps(shown).encode(), b"application/json")
    if path == "/lifespan":
        return await respond(send, json.dumps(lifespan_log).encode(), b"application/json")
    if path.startswith("/environ"):
        body = await read_body(receive)
        return await respond(send, environ_as_json(environ_from_scope(scope, body)), b"application/json")
    if path == "/lines":
        body = await read_body(receive)
        return await respond(send, split_lines(body, params.get("mode", "iter")), b"application/json")
    if path == "/file":
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lab.py"), "rb") as f:
            data = f.read()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/x-python"), (b"content-length", b"%d" % len(data))]})
        for i in range(0, len(data), 1024):
            await send({"type": "http.response.body", "body": data[i:i + 1024], "more_body": True})
        return await send({"type": "http.response.body", "body": b""})
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(_int(params, "n", 5)):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
        return await send({"type": "http.response.body", "body": b""})
    if path == "/bytes":
        return await respond(send, b"x" * _int(params, "n", 65536), b"application/octet-stream")
    if path == "/error":
        raise RuntimeError("the lab app failed on purpose (/error)")
    if path == "/error-late":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first chunk\n", "more_body": True})
        raise RuntimeError("the lab app failed after sending its first chunk")
    if path == "/no-response":
        return  # the server answers 500
    if path == "/no-content":
        # A content-length on a 204 is the app's mistake: the server drops it.
        await send({"type": "http.response.start", "status": 204, "headers": [(b"content-length", b"0")]})
        return await send({"type": "http.response.body", "body": b""})
    if path == "/pid":
        return await respond(send, b"%d\n" % os.getpid())
    if path == "/task":
        return await task_identity(params, send)
    return await respond(send, b"not found\n", status=404)


application = app
