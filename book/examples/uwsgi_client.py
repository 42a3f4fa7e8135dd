"""Play nginx: send one request to a uwsgi socket and print the raw answer.

    python3 book/examples/uwsgi_client.py /tmp/app.sock '/stream?n=3'
"""

import socket
import struct
import sys


def packet(variables):
    """The vars block, then the 4-byte header in front of it."""
    block = b""
    for key, value in variables.items():
        for part in (key.encode("latin-1"), value.encode("latin-1")):
            block += struct.pack("<H", len(part)) + part  # u16, little-endian
    # modifier1 = 0 (WSGI), datasize (u16, little-endian), modifier2 = 0
    return struct.pack("<BHB", 0, len(block), 0) + block


socket_path, uri = sys.argv[1], sys.argv[2]
path, _, query = uri.partition("?")
request = packet({
    "REQUEST_METHOD": "GET",
    "REQUEST_URI": uri,
    "PATH_INFO": path,
    "QUERY_STRING": query,
    "SERVER_PROTOCOL": "HTTP/1.1",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "localhost",
})

with socket.socket(socket.AF_UNIX) as s:
    s.connect(socket_path)
    s.sendall(request)
    answer = b""
    while chunk := s.recv(65536):  # until the server closes the connection
        answer += chunk

print(f"sent {len(request)} bytes, received {len(answer)}; the server closed the connection")
sys.stdout.write(answer.decode("latin-1"))
