"""The client library's HTTP layer against a server that closes idle keep-alive connections.

The server here is a few lines of socket code, not the service: the case is a race on the
wire (gunicorn closing a connection the client is about to reuse), which a real stack hits
only now and then; this server closes every connection after one answer, every time.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from moai_client.http import Http


@pytest.fixture
def closes_on_reuse() -> Iterator[tuple[str, list[int]]]:
    """A server that answers the first request of a connection and drops the connection,
    unanswered, when a second request arrives on it: the moment gunicorn's keep-alive timeout
    closes a connection the client has just reused."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[int] = []

    def read_request(conn: socket.socket) -> bytes:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                break
            request += chunk
        return request

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(1)
            with conn:
                if read_request(conn):
                    body = b'{"ok": true}'
                    # No "Connection: close": the client keeps the connection for its next request.
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    read_request(conn)  # the next request on this connection: closed unanswered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", connections
    listener.close()


def test_a_get_on_a_connection_the_server_closed_is_sent_again_on_a_new_one(closes_on_reuse):
    url, connections = closes_on_reuse
    http = Http(url, "key.secret", timeout=5, progress=False)
    assert http.json("GET", "models") == {"ok": True}
    assert http.json("GET", "models") == {"ok": True}  # its connection dropped it unanswered
    assert len(connections) == 2


def test_a_post_is_not_sent_twice(closes_on_reuse):
    url, connections = closes_on_reuse
    http = Http(url, "key.secret", timeout=5, progress=False)
    http.json("GET", "models")
    with pytest.raises(requests.ConnectionError):
        http.json("POST", "models/x/sessions", data=b"keys")
    assert len(connections) == 1
