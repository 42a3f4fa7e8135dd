"""The slow-client lab: many clients send their request one byte a second,
and one normal request is timed while they do.

    python3 stage5-nginx/labs/slow_clients.py 127.0.0.1:8000            # stage 3
    python3 stage5-nginx/labs/slow_clients.py 127.0.0.1:8080            # stage 5
    python3 stage5-nginx/labs/slow_clients.py 127.0.0.1:8080 --clients 200 --seconds 10
"""

import argparse
import socket
import threading
import time

SLOW_REQUEST = b"GET / HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slow-client\r\n\r\n"


# ANCHOR: drip
def drip(addr, clients, seconds):
    """Opens `clients` connections and sends one byte a second on each."""
    socks = [socket.create_connection(addr) for _ in range(clients)]
    for i in range(seconds):
        for s in socks:
            try:
                s.send(SLOW_REQUEST[i : i + 1])
            except OSError:
                pass
        time.sleep(1)
    for s in socks:  # hang up, the request unfinished
        s.close()
# ANCHOR_END: drip


def timed_request(addr, timeout):
    """One normal request: (seconds it took, status line), or (None, why)."""
    start = time.monotonic()
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
    except socket.timeout:
        return None, f"no answer within {timeout} s"
    return time.monotonic() - start, answer.split(b"\r\n", 1)[0].decode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("addr", help="HOST:PORT of the server")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=5, help="how long the slow clients drip")
    parser.add_argument("--timeout", type=float, default=3.0, help="how long the normal request may take")
    args = parser.parse_args()
    host, _, port = args.addr.rpartition(":")
    addr = (host, int(port))

    dripper = threading.Thread(target=drip, args=(addr, args.clients, args.seconds))
    dripper.start()
    time.sleep(1.5)  # let them connect and start dripping
    print(f"{args.clients} slow clients are sending their request one byte a second")
    took, what = timed_request(addr, args.timeout)
    if took is None:
        print(f"a normal request: {what}")
    else:
        print(f"a normal request: {took * 1000:.1f} ms ({what})")
    dripper.join()


if __name__ == "__main__":
    main()
