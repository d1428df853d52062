"""Hold many slow downloads open against one server, for the resident-memory figure.

Each client asks for the whole package with a small receive buffer and then reads a
kilobyte a second, so the server keeps every response in flight. Prints `connected N`
once all requests are sent, then holds until killed.

    python bench/edge/slow_clients.py HOST PORT PATH TOKEN COUNT [tls]
"""

from __future__ import annotations

import resource
import selectors
import socket
import ssl
import sys
import time


def main() -> None:
    tls = sys.argv[6:] == ["tls"]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a benchmark client: the server is ours, on loopback
    host, port, path, token, count = (
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        sys.argv[4],
        int(sys.argv[5]),
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = max(hard, count + 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    selector = selectors.DefaultSelector()
    sockets: dict[int, socket.socket] = {}
    for _ in range(count):
        sock: socket.socket = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for attempt in range(50):
            try:
                sock.connect((host, port))
                break
            except OSError:  # accept queue full for a moment
                time.sleep(0.01 * (attempt + 1))
        if tls:
            sock = context.wrap_socket(sock)
        sock.sendall(request)
        sock.setblocking(False)
        sockets[sock.fileno()] = sock
        selector.register(sock, selectors.EVENT_READ)
    print(f"connected {len(sockets)}", flush=True)
    while True:
        for key, _ in selector.select(timeout=1.0):
            sock = sockets[key.fd]
            try:
                if not sock.recv(1024):
                    selector.unregister(sock)
            except ssl.SSLWantReadError:
                continue
            except OSError:
                selector.unregister(sock)
        time.sleep(1.0)


if __name__ == "__main__":
    main()
