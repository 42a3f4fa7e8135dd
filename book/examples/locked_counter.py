"""The lab app's /counter, made safe for threads with a lock.

    cargo run -p stage2-threads -- --wsgi-file book/examples/locked_counter.py --threads 8
"""

import threading
import time

counter = 0
counter_lock = threading.Lock()


def app(environ, start_response):
    global counter
    with counter_lock:  # one thread at a time from here ...
        seen = counter
        time.sleep(0.001)
        counter = seen + 1
        body = b"%d\n" % counter  # ... to here
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
