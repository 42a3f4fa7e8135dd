"""What fork() copies: memory, yes; threads, no.

A thread takes a lock and holds it for a second. Meanwhile the main thread
forks. The child gets a copy of the lock, locked, but not the thread that
would have released it: in the child, nobody ever will.
"""

import os
import threading
import time

lock = threading.Lock()


def hold_the_lock():
    with lock:
        time.sleep(1)


threading.Thread(target=hold_the_lock).start()
time.sleep(0.1)  # let the thread take the lock

pid = os.fork()
if pid == 0:
    print(f"child:  {threading.active_count()} thread(s); waiting 3 s for the lock ...")
    got_it = lock.acquire(timeout=3)
    print("child:  got the lock" if got_it else "child:  never got it: its owner was not copied")
    os._exit(0)

got_it = lock.acquire(timeout=3)
print(f"parent: {'got the lock' if got_it else 'never got it'} (its owner finished after 1 s)")
os.waitpid(pid, 0)
