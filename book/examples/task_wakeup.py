"""The least a message costs an asyncio server in Python.

    python3 book/examples/task_wakeup.py

A WebSocket message, once its bytes are read, must at least wake the Task
that awaits it: a future resolved, the Task's step run by the loop, and the
Task awaiting the next future. No server on asyncio can do less per message,
whatever language reads its sockets. This times that, alone, on asyncio's
loop and on uvloop (if installed), less the cost of the loop's turn (which a
server shares between all the messages of one turn).
"""

import asyncio
import time

MESSAGES = 300_000


async def per_message():
    loop = asyncio.get_running_loop()
    waiting = []

    async def handler():
        # The app's `while True: message = await receive()`.
        while True:
            future = loop.create_future()
            waiting.append(future)
            if await future is None:
                return

    task = loop.create_task(handler())
    await asyncio.sleep(0)
    start = time.perf_counter()
    for i in range(MESSAGES):
        waiting.pop().set_result(i)  # a message arrived
        await asyncio.sleep(0)  # one turn of the loop: the Task steps
    with_task = time.perf_counter() - start
    waiting.pop().set_result(None)
    await task
    start = time.perf_counter()
    for _ in range(MESSAGES):
        await asyncio.sleep(0)  # the turns alone
    turns = time.perf_counter() - start
    return (with_task - turns) / MESSAGES, turns / MESSAGES


def report(name, run):
    wake, turn = run(per_message())
    print(f"{name}: {wake * 1e6:.2f} us per Task wake-up, {turn * 1e6:.2f} us per turn of the loop")


report("asyncio", asyncio.run)
try:
    import uvloop
except ImportError:
    print("uvloop: not installed (pip install uvloop)")
else:
    report("uvloop", uvloop.run)
