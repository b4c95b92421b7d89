"""A small HTTP server for /metrics that hostile clients cannot exhaust.

One thread runs a ``selectors`` loop over non-blocking sockets; there is no
thread per connection and nothing blocks on a client. The limits:

* at most ``max_connections`` connections are open. When one more arrives,
  the connection open longest is closed to make room (a real scrape lasts
  milliseconds, a slow or idle client holds its socket for seconds, so the
  idle ones go first). Up to ``max_connections // 2`` (at most 64) new
  connections are accepted per poll, and connections that have data are
  read before new ones are accepted, so a client whose request has arrived
  by the next poll is read and answered before any newer connection can
  push it out, however fast they come;
* a client has ``client_timeout_s`` from connecting to send its whole request
  head (slowly trickled bytes do not extend it), and again as long to take
  the response; then the connection is closed;
* a request head is at most 8 KiB; no request body is read;
* keep-alive is off: every response says ``Connection: close`` and the
  connection is closed after it, so an idle keep-alive connection never
  holds a slot.

Only ``/metrics`` (GET, HEAD) serves the registry, rendered in the server
thread with prometheus_client's encoders; ``/`` is a small page linking to it.
A malformed request gets a 4xx response and at most one line on stderr per
minute; an ``Accept`` header that prometheus_client cannot parse gets the
default text format. Nothing a client sends is ever answered with a
traceback. The server's own counters are exported through :meth:`collect`.
"""

from __future__ import annotations

import errno
import gzip
import re
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest, gzip_accepted
from prometheus_client.registry import Collector

__all__ = [
    "DEFAULT_CLIENT_TIMEOUT_S",
    "DEFAULT_MAX_CONNECTIONS",
    "MAX_HEAD_BYTES",
    "BadRequest",
    "MetricsServer",
    "RateLimitedLog",
    "Request",
    "parse_request",
]

DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_CLIENT_TIMEOUT_S = 5.0
MAX_HEAD_BYTES = 8192
LISTEN_BACKLOG = 1024  # the kernel caps it at net.core.somaxconn
# After accept() fails for lack of file descriptors or memory with nothing to
# close, accepting pauses this long instead of polling a listener that stays ready.
_ACCEPT_PAUSE_S = 0.1
_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {on, 0 s}: close() sends a reset
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_ALLOW = "GET, HEAD, OPTIONS"
_LANDING = (
    b"<!DOCTYPE html>\n<html><head><title>memwatcher exporter</title></head>\n"
    b'<body><h1>memwatcher exporter</h1><p><a href="/metrics">Metrics</a></p></body></html>\n'
)


# ---------------------------------------------------------------- requests


class BadRequest(Exception):
    """A request the server cannot parse: ``status`` (4xx/505) and a short ``reason``."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Request:
    """A parsed request head. Header names are lower case; repeated headers are joined with ", "."""

    method: str
    path: str
    headers: dict[str, str]


def head_end(buf: bytes | bytearray) -> tuple[int, int]:
    """(end of the head, start of what follows) if ``buf`` holds a whole request head, else (-1, -1).

    The head ends at the first empty line; a bare LF is accepted as a line end.
    """
    m = re.search(rb"\r?\n\r?\n", buf)
    return (m.start(), m.end()) if m else (-1, -1)


def parse_request(head: bytes) -> Request:
    """Parse a request head (request line and header lines, without the empty line).

    Raises :class:`BadRequest` (400, or 505 for an HTTP version other than
    1.0 / 1.1). The target may be in origin form (``/metrics?x``), absolute
    form (``http://host/metrics``) or ``*``.
    """
    lines = head.lstrip(b"\r\n").split(b"\n")
    parts = lines[0].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    v = _VERSION.fullmatch(version)
    if not v:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    if (v.group(1), v.group(2)) not in ((b"1", b"0"), (b"1", b"1")):
        raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP version not supported")
    if not target or any(c <= 0x20 or c >= 0x7F for c in target):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request target")
    text = target.decode("ascii")
    if text.startswith("/") or text == "*":
        path = text.partition("?")[0]
    else:
        try:
            path = urlsplit(text).path or "/"
        except ValueError:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request target") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.rstrip(b"\r").partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line")
        key = name.decode("ascii").lower()
        text_value = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text_value}" if key in headers else text_value
    return Request(method.decode("ascii"), path, headers)


def negotiate(accept: str | None) -> tuple[Callable[..., bytes], str]:
    """prometheus_client's encoder and content type for an Accept header.

    Headers it cannot parse (such as ``text/plain; version=a``) get the
    default text format, as if no preference had been given.
    """
    try:
        return choose_encoder(accept or "")
    except Exception:  # a client's header must never become a server error
        return generate_latest, CONTENT_TYPE_PLAIN_0_0_4


# ---------------------------------------------------------------- logging


class RateLimitedLog:
    """One stderr line per kind of problem per ``interval_s``; the next line says how many were held back."""

    def __init__(self, prefix: str, interval_s: float = 60.0) -> None:
        self.prefix = prefix
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, message: str) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        more = f" ({held} more since the last such line)" if held else ""
        try:
            print(f"{self.prefix}{message}{more}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass  # stderr is gone: nothing else to tell


# ---------------------------------------------------------------- the server


class _Conn:
    __slots__ = ("buf", "deadline", "out", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: str, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.deadline = deadline
        self.buf = bytearray()
        self.out: memoryview | None = None  # the response still to send


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


class MetricsServer(Collector):
    """Serves ``registry`` on ``addr:port`` from one thread; see the module docstring for the limits.

    :meth:`start` binds (raising OSError) and starts the thread; :meth:`close`
    stops it and closes every socket (idempotent, waits for a response being
    rendered). Also a prometheus_client collector of the server's own
    counters (``memwatcher_exporter_http_*``): register it to export them.
    """

    def __init__(
        self,
        registry: Collector,
        addr: str,
        port: int,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S,
        log: Callable[[str, str], None] | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if not 0 < client_timeout_s < float("inf"):
            raise ValueError("client_timeout_s must be positive and finite")
        self.registry = registry
        self.addr, self.port = addr, port
        self.max_connections = max_connections
        self.client_timeout_s = client_timeout_s
        self._accept_burst = max(1, min(64, max_connections // 2))
        self.log = log or RateLimitedLog("memwatcher: export: ")
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        # Open connections in accept order (eviction: the first); those reading
        # their request and those being answered, each in deadline order.
        self._conns: dict[_Conn, None] = {}
        self._reading: dict[_Conn, None] = {}
        self._writing: dict[_Conn, None] = {}
        self._accept_paused_until: float | None = None
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.accepted = 0
        self.dropped = {"timeout": 0, "evicted": 0}
        self.responses: dict[int, int] = {}

    # ---- life cycle

    def start(self) -> None:
        """Bind and listen (OSError if that fails), then serve from a daemon thread."""
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                self.addr, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            self._listener = socket.socket(family, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(sockaddr)
            self._listener.listen(LISTEN_BACKLOG)
            self._listener.setblocking(False)
            self.port = self._listener.getsockname()[1]
            self._sel.register(self._listener, selectors.EVENT_READ, "listener")
            self._wake_r.setblocking(False)
            self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        except BaseException:
            self._shut()
            raise
        self._thread = threading.Thread(target=self._serve, name="memwatcher-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close every socket; safe to call more than once."""
        self._stopping = True
        if self._thread is not None:
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass
            self._thread.join()
            self._thread = None
        else:
            self._shut()

    def _shut(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in list(self._conns):
            self._close(conn)
        if self._listener is not None:
            self._unlisten()
            self._listener.close()
            self._listener = None
        for s in (self._wake_r, self._wake_w):
            s.close()
        self._sel.close()

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the loop

    def _serve(self) -> None:
        try:
            while not self._stopping:
                self._poll()
        except Exception as e:  # a bug in the loop itself: one line, not a traceback
            self.log("error", f"HTTP server stopped: {type(e).__name__}: {e}")
        finally:
            self._shut()

    def _poll(self) -> None:
        now = time.monotonic()
        wake = [next(iter(d)).deadline for d in (self._reading, self._writing) if d]
        if self._accept_paused_until is not None:
            wake.append(self._accept_paused_until)
        timeout = max(0.0, min(wake) - now) if wake else None
        listener_ready = False
        for key, mask in self._sel.select(timeout):
            if key.data == "listener":
                listener_ready = True
            elif key.data == "wake":
                try:
                    self._wake_r.recv(64)
                except OSError:
                    pass
            elif key.data in self._conns:  # not closed earlier in this batch
                self._handle(key.data, mask)
        if self._stopping:
            return
        # Requests already received are served before new connections can push them out.
        if listener_ready:
            self._accept()
        now = time.monotonic()
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            if self._listener is not None:
                self._sel.register(self._listener, selectors.EVENT_READ, "listener")
        for d in (self._reading, self._writing):
            while d:
                conn = next(iter(d))
                if conn.deadline > now:
                    break
                self._drop(conn, "timeout")

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(self._accept_burst):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE) and self._conns:
                    self._drop(next(iter(self._conns)), "evicted")
                    continue
                self.log("accept", f"cannot accept connections: {e.strerror or e}")
                self._unlisten()
                self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE_S
                return
            self.accepted += 1
            if len(self._conns) >= self.max_connections:
                self._drop(next(iter(self._conns)), "evicted")
                self.log("limit", f"{self.max_connections} connections open: closing the oldest to accept new ones")
            sock.setblocking(False)
            conn = _Conn(sock, _peer(address), time.monotonic() + self.client_timeout_s)
            self._conns[conn] = None
            self._reading[conn] = None
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self._handle(conn, selectors.EVENT_READ)  # the request often arrives with the connection

    def _handle(self, conn: _Conn, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                self._on_readable(conn)
            elif mask & selectors.EVENT_WRITE:
                self._on_writable(conn)
        except Exception as e:  # a bug costs this connection, not the server
            self.log("error", f"serving {conn.peer} failed: {type(e).__name__}: {e}")
            self._close(conn)

    def _unlisten(self) -> None:
        try:
            self._sel.unregister(self._listener)
        except (KeyError, ValueError):
            pass  # not registered (accepting is paused)

    def _on_readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its request
            self._close(conn)
            return
        start = max(0, len(conn.buf) - 3)
        conn.buf += data
        end, _ = head_end(conn.buf[start:])
        if end >= 0:
            head = bytes(conn.buf[: start + end])
        elif len(conn.buf) > MAX_HEAD_BYTES:
            head = None
        else:
            return
        del self._reading[conn]
        conn.buf = bytearray()
        if head is None:
            self._bad(conn, BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head over 8 KiB"))
            return
        try:
            request = parse_request(head)
        except BadRequest as e:
            self._bad(conn, e)
            return
        self._respond(conn, *self._route(request))

    def _on_writable(self, conn: _Conn) -> None:
        assert conn.out is not None
        try:
            while conn.out:
                sent = conn.sock.send(conn.out)
                conn.out = conn.out[sent:]
        except (BlockingIOError, InterruptedError):
            self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        except OSError:
            pass  # the client went away: nothing more to send
        self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._conns.pop(conn, None)
        self._reading.pop(conn, None)
        self._writing.pop(conn, None)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _drop(self, conn: _Conn, reason: str) -> None:
        """Close a connection before its response was sent (``timeout`` or ``evicted``)."""
        self.dropped[reason] += 1
        try:  # reset rather than linger: the client gets no more of our time
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        self._close(conn)

    # ---- responses

    def _bad(self, conn: _Conn, e: BadRequest) -> None:
        self.log("request", f"bad request from {conn.peer}: {e.reason}")
        self._respond(conn, e.status, [("Content-Type", "text/plain; charset=utf-8")], f"{e.reason}\n".encode())

    def _route(self, request: Request) -> tuple[HTTPStatus, list[tuple[str, str]], bytes, bool]:
        """(status, headers, body, head_only) for a parsed request."""
        head_only = request.method == "HEAD"
        text = [("Content-Type", "text/plain; charset=utf-8")]
        if request.path not in ("/metrics", "/"):
            return HTTPStatus.NOT_FOUND, text, b"Not found: metrics are at /metrics\n", head_only
        if request.method == "OPTIONS":
            return HTTPStatus.NO_CONTENT, [("Allow", _ALLOW)], b"", False
        if request.method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, [*text, ("Allow", _ALLOW)], b"Method not allowed\n", False
        if request.path == "/":
            return HTTPStatus.OK, [("Content-Type", "text/html; charset=utf-8")], _LANDING, head_only
        encoder, content_type = negotiate(request.headers.get("accept"))
        try:
            body = encoder(self.registry)
        except Exception as e:  # a collector's bug: one line, not a traceback per scrape
            self.log("error", f"rendering /metrics failed: {type(e).__name__}: {e}")
            return HTTPStatus.INTERNAL_SERVER_ERROR, text, b"Rendering the metrics failed\n", head_only
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        if gzip_accepted(request.headers.get("accept-encoding", "")):
            body = gzip.compress(body, compresslevel=6)
            headers.append(("Content-Encoding", "gzip"))
        return HTTPStatus.OK, headers, body, head_only

    def _respond(
        self,
        conn: _Conn,
        status: HTTPStatus,
        headers: list[tuple[str, str]],
        body: bytes,
        head_only: bool = False,
    ) -> None:
        self.responses[status.value] = self.responses.get(status.value, 0) + 1
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Date: {formatdate(usegmt=True)}",
            *(f"{k}: {v}" for k, v in headers),
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        conn.out = memoryview(out if head_only else out + body)
        conn.deadline = time.monotonic() + self.client_timeout_s
        self._writing[conn] = None
        self._on_writable(conn)

    # ---- the server's own metrics

    def collect(self) -> Iterator[Metric]:
        open_now = GaugeMetricFamily("memwatcher_exporter_http_connections", "HTTP connections open now")
        open_now.add_metric([], len(self._conns))
        limit = GaugeMetricFamily(
            "memwatcher_exporter_http_connections_max", "HTTP connections the exporter keeps open at most"
        )
        limit.add_metric([], self.max_connections)
        accepted = CounterMetricFamily("memwatcher_exporter_http_connections_accepted", "HTTP connections accepted")
        accepted.add_metric([], self.accepted)
        dropped = CounterMetricFamily(
            "memwatcher_exporter_http_connections_dropped",
            "HTTP connections the exporter closed before answering: the client was too slow (timeout) "
            "or the connection limit was reached and it was the oldest (evicted)",
            labels=["reason"],
        )
        for reason, n in self.dropped.items():
            dropped.add_metric([reason], n)
        responses = CounterMetricFamily(
            "memwatcher_exporter_http_responses", "HTTP responses sent, by status code", labels=["code"]
        )
        for code, n in sorted(dict(self.responses).items()):
            responses.add_metric([str(code)], n)
        return iter([open_now, limit, accepted, dropped, responses])
