"""Requests on one kept-alive connection are answered at once, not after a delayed ACK.

uvicorn's h11 protocol writes a response's headers and its body in two writes. Unless the
accepted connection has TCP_NODELAY, Nagle's algorithm holds the body until the client ACKs
the headers, which Linux delays by up to 40 ms: every benchmark against the emulator measured
those 40 ms instead of the code under test.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

from emulator_fixtures import running
from offload_emulator.server import bind

BODY = json.dumps(
    {"model": "claude-haiku-5-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
).encode()
REQUEST = (
    b"POST /v1/messages HTTP/1.1\r\nHost: emulator\r\nx-api-key: k\r\nanthropic-version: 2023-06-01\r\n"
    b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


def _read_response(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def test_the_listening_socket_is_tcp_so_connections_get_nodelay() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_requests_on_one_connection_do_not_wait_for_a_delayed_ack() -> None:
    with running() as emu:
        url = urlsplit(emu.url)
        with socket.create_connection((url.hostname, url.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(REQUEST)
            _read_response(sock)  # the first exchange is quick either way (TCP quick-ack at start)
            took = []
            for _ in range(6):
                t = time.perf_counter()
                sock.sendall(REQUEST)
                assert json.loads(_read_response(sock))["type"] == "message"
                took.append(time.perf_counter() - t)
    # With Nagle every one of these waits ~40 ms; the median stays far below even on a busy machine.
    assert sorted(took)[len(took) // 2] < 0.030, took
