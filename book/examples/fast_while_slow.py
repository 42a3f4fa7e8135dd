"""The course notes' experiment: how long does /fast/ take while /slow/ is in flight?

    python3 book/examples/fast_while_slow.py http://127.0.0.1:8000 [SECONDS]

One thread asks for /slow/?s=SECONDS (default 3); half a second later the
main thread asks for /fast/ and times it. A server that handles one request
at a time makes /fast/ wait for /slow/ to finish.
"""

import sys
import threading
import time
import urllib.request


# ANCHOR: measure
def fetch(url):
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return time.perf_counter() - started


def main():
    base = sys.argv[1].rstrip("/")
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    fetch(f"{base}/fast/")  # warm up: imports, database connection
    slow = {}
    thread = threading.Thread(target=lambda: slow.update(t=fetch(f"{base}/slow/?s={seconds:g}")))
    thread.start()
    time.sleep(0.5)
    fast = fetch(f"{base}/fast/")
    thread.join()
    print(f"/fast/ took {fast * 1000:.0f} ms while /slow/?s={seconds:g} was in flight "
          f"(/slow/ took {slow['t']:.2f} s)")
# ANCHOR_END: measure


if __name__ == "__main__":
    main()
