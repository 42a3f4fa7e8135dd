"""worker_abort, put to use: where was the worker stuck when --timeout hit?

    cargo run -p stage3-prefork -- -c book/examples/stuck.conf.py apps.lab:app
    curl "localhost:8000/cpu?ms=10000"     # 10 s of pure Python: past the timeout
"""

# ANCHOR: stuck
import sys
import threading
import traceback

bind = "127.0.0.1:8000"
workers = 1
timeout = 3


def worker_abort(worker):
    # This runs on the worker's hook thread; the stuck one is the main thread.
    frame = sys._current_frames()[threading.main_thread().ident]
    stack = "".join(traceback.format_stack(frame)).rstrip()
    worker.log.error("stuck in:\n%s", stack)
# ANCHOR_END: stuck
