"""Which Python runs this app, and where does an import come from?

    curl 'localhost:8000/?module=flask'
"""

import importlib
import sys


def application(environ, start_response):
    name = environ.get("QUERY_STRING", "").partition("module=")[2] or "os"
    try:
        where = importlib.import_module(name).__file__
    except ImportError as e:
        where = f"cannot be imported ({e})"
    lines = [f"Python {sys.version.split()[0]}, prefix {sys.prefix}", f"{name}: {where}", "sys.path:"]
    lines += [f"  {p}" for p in sys.path]
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [("\n".join(lines) + "\n").encode()]
