"""The lab app: one route per experiment in the book, benchmark and test.

    /               hello
    /cpu?ms=N       N milliseconds of pure-Python work (holds the GIL)
    /io?ms=N        time.sleep(N ms) (releases the GIL, like waiting on a database)
    /counter        a global read, a short sleep, then a write: loses updates under threads
    /counter/reset  sets the counter back to 0
    /environ...     the environ the server built, as JSON (any path under /environ)
    /lines?mode=M   the body split by wsgi.input's readline / readlines / iteration, as JSON
    /file           this file, sent through wsgi.file_wrapper
    /echo           the request body back
    /stream?n=N     a generator of N chunks (streaming; no Content-Length)
    /bytes?n=N      a response of N bytes (default 65536) in one chunk
    /error          raises before start_response (the server answers 500)
    /error-late     raises after the first chunk was sent (the server closes the connection)
    /pid            the worker's process id (to see which worker answered)

LAB_SWITCH_INTERVAL_MS=N (environment, read at import) sets CPython's switch
interval: how long a thread may keep the GIL while another waits for it
(sys.setswitchinterval; 5 ms by default).
"""

import json
import os
import sys
import time

# ANCHOR: switch_interval
if os.environ.get("LAB_SWITCH_INTERVAL_MS"):
    sys.setswitchinterval(float(os.environ["LAB_SWITCH_INTERVAL_MS"]) / 1000.0)
# ANCHOR_END: switch_interval

HELLO = b"Hello, World!\n"
counter = 0


def _query(environ):
    params = {}
    for pair in environ.get("QUERY_STRING", "").split("&"):
        if pair:
            key, _, value = pair.partition("=")
            params[key] = value
    return params


def _int(params, name, default):
    try:
        return int(params.get(name, default))
    except ValueError:
        return default


def _respond(start_response, body, content_type="text/plain; charset=utf-8", status="200 OK"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


# ANCHOR: cpu
def cpu(ms):
    """Busy pure-Python work for `ms` milliseconds of CPU time: the GIL is held throughout."""
    deadline = time.thread_time() + ms / 1000.0
    n = 0
    while time.thread_time() < deadline:
        for i in range(200):
            n += i * i
    return n
# ANCHOR_END: cpu


def stream(n):
    for i in range(n):
        yield b"chunk %d\n" % i


def error_late(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first chunk\n"
    raise RuntimeError("the lab app failed after sending its first chunk")


def read_body(environ):
    """The request body, read the way PEP 3333 asks: at most CONTENT_LENGTH
    bytes; without it (a chunked upload) until the end, which is safe because
    the server sets wsgi.input_terminated."""
    length = environ.get("CONTENT_LENGTH")
    return environ["wsgi.input"].read(int(length) if length else -1)


def environ_as_json(environ):
    plain = {}
    for key, value in environ.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            plain[key] = value
        elif isinstance(value, tuple):
            plain[key] = list(value)
        else:
            plain[key] = type(value).__name__
    plain["wsgi.input.body"] = read_body(environ).decode("latin-1")
    return json.dumps(plain, sort_keys=True).encode()


def read_lines(environ, mode):
    """Reads the body with the line-oriented half of wsgi.input's API."""
    stream = environ["wsgi.input"]
    if mode == "readline":
        # readline with a size: at most 3 bytes, then the rest of that line.
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


def app(environ, start_response):
    global counter
    path = environ.get("PATH_INFO", "/")
    params = _query(environ)

    if path == "/":
        return _respond(start_response, HELLO)
    if path == "/cpu":
        cpu(_int(params, "ms", 1))
        return _respond(start_response, b"cpu done\n")
    # ANCHOR: io
    if path == "/io":
        time.sleep(_int(params, "ms", 10) / 1000.0)
        return _respond(start_response, b"io done\n")
    # ANCHOR_END: io
    if path == "/counter":
        # Read, let another thread run, write back: the textbook lost update.
        seen = counter
        time.sleep(0.001)
        counter = seen + 1
        return _respond(start_response, b"%d\n" % counter)
    if path == "/counter/reset":
        counter = 0
        return _respond(start_response, b"0\n")
    if path.startswith("/environ"):
        return _respond(start_response, environ_as_json(environ), "application/json")
    if path == "/lines":
        return _respond(start_response, read_lines(environ, params.get("mode", "iter")), "application/json")
    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/x-python")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"), 1024)
    if path == "/echo":
        body = read_body(environ)
        content_type = environ.get("CONTENT_TYPE") or "application/octet-stream"
        return _respond(start_response, body, content_type)
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return stream(_int(params, "n", 5))
    if path == "/bytes":
        return _respond(start_response, b"x" * _int(params, "n", 65536), "application/octet-stream")
    if path == "/error":
        raise RuntimeError("the lab app failed on purpose (/error)")
    if path == "/error-late":
        return error_late(start_response)
    if path == "/pid":
        return _respond(start_response, b"%d\n" % os.getpid())
    if path == "/no-content":
        # A Content-Length on a 204 is the app's mistake: the server drops it.
        start_response("204 No Content", [("Content-Length", "0")])
        return [b""]
    return _respond(start_response, b"not found\n", status="404 Not Found")


application = app
