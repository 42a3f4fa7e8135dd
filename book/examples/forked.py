"""An app that shows where it was imported, and what fork did to it.

With --preload it is imported once, in the master; each worker then runs
the function registered with os.register_at_fork: proof that the server
told Python about the fork (PyOS_AfterFork_Child).
"""

import os
import random

print(f"imported in pid {os.getpid()}", flush=True)
os.register_at_fork(
    after_in_child=lambda: print(f"after_in_child: pid {os.getpid()}", flush=True)
)


def app(environ, start_response):
    body = f"pid {os.getpid()}, random.random() = {random.random():.6f}\n".encode()
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
