"""The GIL, measured: the same work done by N threads, then by N processes.

Run it from the root of the workspace:  python3 book/examples/gil.py
"""

import multiprocessing
import threading
import time


def cpu(ms):
    """Pure-Python work for `ms` milliseconds of CPU time: holds the GIL."""
    deadline = time.thread_time() + ms / 1000
    while time.thread_time() < deadline:
        sum(i * i for i in range(200))


def sleep(ms):
    """Waiting, as a view waits for its database: releases the GIL."""
    time.sleep(ms / 1000)


def wall_time(kind, work, n):
    """Seconds for n threads (or processes) to do `work` for 200 ms each."""
    workers = [kind(target=work, args=(200,)) for _ in range(n)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


if __name__ == "__main__":
    print("wall time for N workers doing 200 ms of work each")
    print(f"{'N':>2}  {'threads, sleep':>15}  {'threads, CPU':>13}  {'processes, CPU':>15}")
    for n in (1, 2, 4):
        t_sleep = wall_time(threading.Thread, sleep, n)
        t_cpu = wall_time(threading.Thread, cpu, n)
        p_cpu = wall_time(multiprocessing.Process, cpu, n)
        print(f"{n:>2}  {t_sleep:>14.2f}s  {t_cpu:>12.2f}s  {p_cpu:>14.2f}s")
