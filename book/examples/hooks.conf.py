"""A gunicorn configuration file, as stage 3 reads it: settings are names,
server hooks are functions. Run it with

    cargo run -p stage3-prefork -- -c book/examples/hooks.conf.py apps.lab:app

(gunicorn reads it the same way: gunicorn -c book/examples/hooks.conf.py apps.lab:app).
"""

# ANCHOR: settings
import multiprocessing
import time

bind = "127.0.0.1:8000"
workers = 2
timeout = 5  # seconds of silence before the master aborts a worker
max_requests = 1000
max_requests_jitter = 50
cores = multiprocessing.cpu_count()  # not a setting: the server ignores it
# ANCHOR_END: settings


# ANCHOR: master_hooks
def on_starting(server):
    server.log.info("on_starting: master %s, %s workers to come", server.pid, server.num_workers)


def when_ready(server):
    server.log.info("when_ready: listening, about to fork")


def pre_fork(server, worker):
    server.log.info("pre_fork: worker number %s", worker.age)


def child_exit(server, worker):
    server.log.info("child_exit: worker %s is gone", worker.pid)


def on_exit(server):
    server.log.info("on_exit: goodbye")
# ANCHOR_END: master_hooks


# ANCHOR: worker_hooks
def post_fork(server, worker):
    worker.log.info("post_fork: I am %s, forked by %s", worker.pid, worker.ppid)


def post_worker_init(worker):
    worker.log.info("post_worker_init: the app is imported")


def pre_request(worker, req):
    req.started = time.perf_counter()


def post_request(worker, req, environ, resp):
    ms = (time.perf_counter() - req.started) * 1000
    worker.log.info("%s %s -> %s in %.1f ms", req.method, req.path, resp.status_code, ms)


def worker_int(worker):
    worker.log.info("worker_int: interrupted")


def worker_abort(worker):
    worker.log.info("worker_abort: aborted, it took too long")


def worker_exit(server, worker):
    worker.log.info("worker_exit: %s leaves", worker.pid)
# ANCHOR_END: worker_hooks
