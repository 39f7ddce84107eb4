"""A TCP proxy on 127.0.0.1 that breaks database connections the way networks do.

The fault tests put it between brama_sql and a real server (only loopback addresses: the
proxy listens on 127.0.0.1 and forwards to the server's 127.0.0.1 port). Faults:

- :meth:`Proxy.reset`: every open connection is reset (RST) at once;
- :meth:`Proxy.stall`: nothing is forwarded in either direction until :meth:`Proxy.resume`,
  and new connections are accepted but stall too (a server gone silent, a black-holed route);
- :meth:`Proxy.lose_commit_reply`: the next ``COMMIT`` a client sends reaches the server, but
  its reply never reaches the client, whose connection is then reset (the transaction
  committed; the client cannot know);
- :meth:`Proxy.freeze_after_lock`: the next client that sends ``FOR UPDATE`` gets its reply,
  and from then on that one connection is frozen both ways (a client partitioned away, or
  whose host died, while it holds a row lock); other connections go on.

Every thread is a daemon and :meth:`Proxy.close` ends them; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

COMMIT = re.compile(rb"\bCOMMIT\b")
"""A COMMIT statement (not the COMMITTED of ``BEGIN ISOLATION LEVEL READ COMMITTED``)."""


@dataclass
class _Link:
    """One proxied connection: the client's socket and the server's."""

    client: socket.socket
    server: socket.socket
    frozen: bool = False
    lost: bool = False
    """The server's replies are dropped from now on (a COMMIT reply being lost)."""
    closed: bool = False
    watch_lock: bool = False
    locked: bool = False
    """It sent FOR UPDATE (when watched): freeze it once its reply went back."""


@dataclass
class Proxy:
    """Forward 127.0.0.1:``port`` to 127.0.0.1:``target_port``, with faults on demand."""

    target_port: int
    port: int = 0
    stalled: bool = False
    links: list[_Link] = field(default_factory=list)
    stall_after_commit: bool = False
    """With :meth:`lose_commit_reply`: instead of resetting the client, stall everything
    right after the COMMIT went through (the server answers nothing until :meth:`resume`)."""
    _lose_next_commit: bool = False
    _freeze_next_lock: bool = False
    commits_lost: int = 0
    frozen_links: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._running = True
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    # -- faults -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Reset every open connection now."""
        with self._lock:
            links = list(self.links)
        for link in links:
            self._close(link, reset=True)

    def stall(self) -> None:
        """Stop forwarding in both directions, on open and new connections alike."""
        self.stalled = True

    def resume(self) -> None:
        """Forward again (connections that timed out meanwhile stay closed by their ends)."""
        self.stalled = False

    def lose_commit_reply(self) -> None:
        """The next COMMIT goes through to the server; its reply is lost and the client's
        connection is reset."""
        self._lose_next_commit = True

    def freeze_after_lock(self) -> None:
        """Freeze the next connection that locks a row, right after the lock is granted."""
        self._freeze_next_lock = True

    def close(self) -> None:
        """Stop the proxy and close every connection."""
        self._running = False
        self.reset()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    # -- forwarding ---------------------------------------------------------------------------

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                self._hard_close(client)
                continue
            for end in (client, server):
                end.setblocking(False)
            link = _Link(client, server)
            with self._lock:
                self.links.append(link)
            thread = threading.Thread(target=self._pump, args=(link,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, link: _Link) -> None:
        while self._running and not link.closed:
            if self.stalled or link.frozen:
                time.sleep(0.02)
                continue
            try:
                readable, _, _ = select.select([link.client, link.server], [], [], 0.05)
            except (OSError, ValueError):
                break
            for source in readable:
                try:
                    data = source.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._close(link, reset=False)
                    return
                if source is link.client:
                    self._from_client(link, data)
                    self._send(link, link.server, data)
                    if link.lost and self.stall_after_commit:
                        self.stalled = True
                else:
                    if link.lost:
                        continue
                    self._send(link, link.client, data)
                    if link.locked:
                        link.frozen = True
                        self.frozen_links += 1

    def _from_client(self, link: _Link, data: bytes) -> None:
        upper = data.upper()
        if self._lose_next_commit and COMMIT.search(upper):
            self._lose_next_commit = False
            link.lost = True
            self.commits_lost += 1
            if not self.stall_after_commit:
                threading.Timer(0.3, self._close, args=(link, True)).start()
        if self._freeze_next_lock and b"FOR UPDATE" in upper:
            self._freeze_next_lock = False
            link.locked = True

    def _send(self, link: _Link, target: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 5
        while view and time.monotonic() < deadline and not link.closed:
            try:
                sent = target.send(view)
            except BlockingIOError:
                select.select([], [target], [], 0.05)
                continue
            except OSError:
                self._close(link, reset=False)
                return
            view = view[sent:]

    def _close(self, link: _Link, reset: bool) -> None:
        if link.closed:
            return
        link.closed = True
        for end in (link.client, link.server):
            if reset:
                self._hard_close(end)
            else:
                with contextlib.suppress(OSError):
                    end.close()
        with self._lock:
            if link in self.links:
                self.links.remove(link)

    @staticmethod
    def _hard_close(end: socket.socket) -> None:
        """Close with SO_LINGER 0: the peer sees a reset, not an orderly end."""
        try:
            end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            end.close()
        except OSError:
            pass
