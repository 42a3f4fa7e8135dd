"""The slow, rare parts of stage 6, in Python: the lifespan protocol and
shutting the loop down. The request path (scope, receive, send, running the
app's coroutine) is in Rust (py.rs)."""

import asyncio
import logging


class ClientDisconnected(OSError):
    """Raised by send() once the client is gone (ASGI spec 2.4: a server
    raises a subclass of OSError when send() is called on a closed
    connection)."""


class Lifespan:
    """Runs the app's `lifespan` scope: startup before the first request,
    shutdown after the last one, `state` shared into every request scope."""

    def __init__(self, app, state, mode, log):
        self.app = app
        self.state = state
        self.mode = mode  # "auto", "on" or "off"
        self.log = log
        self.queue = asyncio.Queue()
        self.startup_done = asyncio.Event()
        self.shutdown_done = asyncio.Event()
        self.startup_failed = None
        self.shutdown_failed = None
        self.sent_any = False
        self.error = None
        self.task = None

    async def _run(self):
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.queue.get, self._send)
        except BaseException as exc:  # noqa: BLE001 - the app's failure is reported, not raised
            self.error = exc
        finally:
            self.startup_done.set()
            self.shutdown_done.set()

    async def _send(self, message):
        kind = message["type"]
        self.sent_any = True
        if kind == "lifespan.startup.complete":
            self.startup_done.set()
        elif kind == "lifespan.startup.failed":
            self.startup_failed = message.get("message", "")
            self.startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self.shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self.shutdown_failed = message.get("message", "")
            self.shutdown_done.set()
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")

    async def startup(self):
        """None when the app may be served; else the sentence to exit with."""
        if self.mode == "off":
            return None
        self.task = asyncio.get_running_loop().create_task(self._run())
        await self.queue.put({"type": "lifespan.startup"})
        await self.startup_done.wait()
        if self.startup_failed is not None:
            why = f": {self.startup_failed}" if self.startup_failed else ""
            return f"the app's lifespan startup failed{why}"
        if self.error is not None or (self.task.done() and not self.sent_any):
            if self.mode == "on" or self.sent_any:
                return f"the app's lifespan startup raised {self.error!r}"
            # An app that does not know the lifespan scope (it raised or
            # returned at once): serve it anyway, as uvicorn's auto mode does.
            self.log.info("ASGI 'lifespan' protocol appears unsupported by the app (%r); serving it without", self.error)
            self.mode = "off"
            return None
        self.log.info("Application startup complete.")
        return None

    async def shutdown(self, timeout):
        if self.mode == "off" or self.task is None or self.task.done():
            return
        await self.queue.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self.shutdown_done.wait(), timeout)
        except asyncio.TimeoutError:
            self.log.warning("the app's lifespan shutdown did not finish within %s s", timeout)
            return
        if self.shutdown_failed is not None:
            self.log.error("the app's lifespan shutdown failed: %s", self.shutdown_failed)
        elif self.error is not None:
            self.log.error("the app's lifespan raised %r", self.error)
        else:
            self.log.info("Application shutdown complete.")


async def cancel_leftovers(timeout):
    """Cancels the tasks still running after the last connection closed
    (requests past the graceful timeout, background tasks) and waits a moment
    for them to end."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


def make_logger(rust_log):
    """A logging.Logger whose records go to the server's own log."""

    class ToRust(logging.Handler):
        def emit(self, record):
            try:
                rust_log(record.levelno, self.format(record))
            except Exception:  # noqa: BLE001
                pass

    log = logging.getLogger("stage6")
    log.propagate = False
    log.handlers[:] = [ToRust()]
    log.setLevel(logging.DEBUG)
    return log


def count_turns(loop, count):
    """Wraps the loop's selector so every turn of the loop is counted
    (--stats): each `select` returns with the GIL taken back."""
    selector = getattr(loop, "_selector", None)
    if selector is None:
        return False
    select = selector.select

    def counting_select(timeout=None):
        try:
            return select(timeout)
        finally:
            count()

    selector.select = counting_select
    return True
