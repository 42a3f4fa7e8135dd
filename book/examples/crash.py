"""An app with a request that crashes the interpreter, as a buggy C
extension can: not an exception Python could catch, a segmentation fault.

    /        hello
    /slow    sleeps 3 s
    /crash   reads memory address 0: the process dies of SIGSEGV
"""

import ctypes
import time


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/crash":
        ctypes.string_at(0)  # never returns
    if path == "/slow":
        time.sleep(3)
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
