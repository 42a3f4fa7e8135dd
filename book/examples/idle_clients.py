"""Open N keep-alive connections, make one request on each, then sit idle.

    python3 book/examples/idle_clients.py 10 10    # 10 connections, idle for 10 s

Like a browser's connections between two clicks: open, and silent.
"""

import http.client
import sys
import time

count, seconds = int(sys.argv[1]), float(sys.argv[2])
connections = []
for _ in range(count):
    c = http.client.HTTPConnection("127.0.0.1", 8000)
    c.request("GET", "/")
    c.getresponse().read()
    connections.append(c)
print(f"{count} connections open, each served once; now idle for {seconds:g} s")
time.sleep(seconds)
