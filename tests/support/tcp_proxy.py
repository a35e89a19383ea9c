"""A loopback TCP proxy that a test can cut, to make a real server go away and come back.

    proxy = TcpProxy("127.0.0.1", 5432); proxy.start()   # clients connect to proxy.port
    proxy.cut()      # drop every open connection and refuse new ones: the server is "down"
    proxy.resume()   # accept again
    proxy.drop_reply_to(b"COMMIT")  # pass the next client chunk holding b"COMMIT" to the
                                    # server, then drop the connection before its reply

Threads, not asyncio, so it works beside code under test that runs its own event loops.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from contextlib import suppress


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._accepting = threading.Event()
        self._stopped = threading.Event()
        self._drop_marker: bytes | None = None
        self.dropped_replies = 0
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._accepting.set()
        self._thread.start()
        return self

    def cut(self) -> None:
        """Close every proxied connection; new ones are closed as soon as they are accepted."""
        self._accepting.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _close(a)
            _close(b)

    def resume(self) -> None:
        self._accepting.set()

    def drop_reply_to(self, marker: bytes) -> None:
        """Forward the next client chunk containing `marker`, then drop that connection
        without relaying the server's answer (a reply lost on the way back)."""
        self._drop_marker = marker

    def close(self) -> None:
        self._stopped.set()
        self.cut()
        _close(self._listener)
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._accepting.is_set():
                _close(client)
                continue
            try:
                server = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [], 0.2)
                if self._stopped.is_set():
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
                    marker = self._drop_marker
                    if sock is client and marker is not None and marker in data:
                        self._drop_marker = None
                        time.sleep(0.3)  # let the server act on it, then lose its reply
                        self.dropped_replies += 1
                        return
        except (OSError, ValueError):
            return
        finally:
            _close(client)
            _close(server)
            with self._lock:
                with suppress(ValueError):
                    self._pairs.remove((client, server))


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
