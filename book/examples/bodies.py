"""Three kinds of body iterable, and what the server does with each.

    /list        a list: the server adds up the lengths and sends Content-Length
    /generator   a generator: the length is unknown, so the body is streamed
    /fails       an iterable with close() that fails halfway: close() is still called
"""


def generator():
    yield b"one\n"
    yield b"two\n"


class FailsHalfway:
    """Like a file or a database cursor: something to iterate, then close."""

    def __init__(self, errors):
        self.errors = errors

    def __iter__(self):
        yield b"one\n"
        raise RuntimeError("the second chunk failed")

    def close(self):
        print("FailsHalfway.close() was called", file=self.errors, flush=True)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    if path == "/list":
        return [b"one\n", b"two\n"]
    if path == "/generator":
        return generator()
    if path == "/fails":
        return FailsHalfway(environ["wsgi.errors"])
    return [b"try /list, /generator or /fails\n"]
