"""The exporter's HTTP server on its own: parsing, limits, timeouts, logging.

Fast tests (no BPF, no root): the server serves a registry holding one gauge
on a free loopback port. tests/test_exporter.py runs the real exporter under
a slow-client flood.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

from memwatcher import metrics_server
from memwatcher.metrics_server import BadRequest, MetricsServer, RateLimitedLog, parse_request

# ---------------------------------------------------------------- parsing


def test_parse_request() -> None:
    r = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\naccept:  b \r\nX-Empty:")
    assert (r.method, r.path) == ("GET", "/metrics")
    assert r.headers == {"host": "a", "accept": "text/plain, b", "x-empty": ""}
    assert parse_request(b"HEAD http://host:9464/metrics HTTP/1.0").path == "/metrics"
    assert parse_request(b"GET / HTTP/1.0\nHost: a").headers == {"host": "a"}  # bare LF line ends
    assert parse_request(b"\r\nGET / HTTP/1.1").path == "/"  # a stray CRLF before the request line
    assert parse_request(b"OPTIONS * HTTP/1.1").path == "*"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"", HTTPStatus.BAD_REQUEST),
        (b"GET", HTTPStatus.BAD_REQUEST),
        (b"GET /metrics", HTTPStatus.BAD_REQUEST),  # HTTP/0.9
        (b"GET /metrics HTTP/1.1 extra", HTTPStatus.BAD_REQUEST),
        (b"GET  /metrics HTTP/1.1", HTTPStatus.BAD_REQUEST),
        (b"G(T /metrics HTTP/1.1", HTTPStatus.BAD_REQUEST),
        (b"GET /metrics HTTP/x.y", HTTPStatus.BAD_REQUEST),
        (b"GET /metrics HTTP/2.0", HTTPStatus.HTTP_VERSION_NOT_SUPPORTED),
        (b"GET /metrics HTTP/1.2", HTTPStatus.HTTP_VERSION_NOT_SUPPORTED),
        (b"GET /m\x7fetrics HTTP/1.1", HTTPStatus.BAD_REQUEST),
        (b"GET /m\xffetrics HTTP/1.1", HTTPStatus.BAD_REQUEST),
        (b"GET http://[::1/metrics HTTP/1.1", HTTPStatus.BAD_REQUEST),
        (b"GET /metrics HTTP/1.1\r\nno colon", HTTPStatus.BAD_REQUEST),
        (b"GET /metrics HTTP/1.1\r\n folded: x", HTTPStatus.BAD_REQUEST),
        (b"GET /metrics HTTP/1.1\r\nBad Name: x", HTTPStatus.BAD_REQUEST),
        (b"GET /metrics HTTP/1.1\r\n: empty name", HTTPStatus.BAD_REQUEST),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", HTTPStatus.BAD_REQUEST),  # TLS to a plain port
    ],
)
def test_parse_request_rejects(head: bytes, status: HTTPStatus) -> None:
    with pytest.raises(BadRequest) as e:
        parse_request(head)
    assert e.value.status == status
    assert len(e.value.reason) < 40  # a short fixed phrase, nothing the client wrote


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain; version=a",
        "text/plain; version=1.a.0",
        "application/openmetrics-text; version=x",
        "text/plain; version=",
        "text/plain;;;version==1",
        ";,;,=,",
        "\x00\xff",
    ],
)
def test_negotiate_never_raises(accept: str) -> None:
    registry = CollectorRegistry()
    Gauge("demo_bytes", "A gauge", registry=registry).set(1)
    encoder, content_type = metrics_server.negotiate(accept)
    body = encoder(registry).decode()
    assert "demo_bytes" in body and content_type


def test_negotiate_keeps_valid_choices() -> None:
    assert metrics_server.negotiate(None)[1] == CONTENT_TYPE_PLAIN_0_0_4
    assert metrics_server.negotiate("text/plain; version=a")[1] == CONTENT_TYPE_PLAIN_0_0_4
    assert metrics_server.negotiate("application/openmetrics-text; version=1.0.0")[1].startswith(
        "application/openmetrics-text"
    )


def test_rate_limited_log(capsys: pytest.CaptureFixture[str]) -> None:
    log = RateLimitedLog("p: ", interval_s=0.2)
    for _ in range(5):
        log("a", "first kind")
    log("b", "second kind")
    assert capsys.readouterr().err == "p: first kind\np: second kind\n"
    time.sleep(0.25)
    log("a", "first kind")
    assert capsys.readouterr().err == "p: first kind (4 more since the last such line)\n"


# ---------------------------------------------------------------- the server


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("demo_bytes", "A gauge", registry=registry).set(42)
    return registry


class Logged:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, kind: str, message: str) -> None:
        self.lines.append((kind, message))


def serve(registry: CollectorRegistry, **limits: float) -> tuple[MetricsServer, Logged]:
    logged = Logged()
    server = MetricsServer(registry, "127.0.0.1", 0, log=logged, **limits)  # type: ignore[arg-type]
    server.start()
    return server, logged


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[tuple[MetricsServer, Logged]]:
    server, logged = serve(registry)
    yield server, logged
    server.close()


def exchange(port: int, data: bytes, timeout_s: float = 2.0) -> bytes:
    """Send ``data``, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def split(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def closed_by_server(s: socket.socket, within_s: float) -> float:
    """Seconds until the server closed ``s`` (reset or end of file); fails after ``within_s``."""
    started = time.monotonic()
    s.settimeout(within_s)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"still open after {within_s} s")
    return time.monotonic() - started


def test_serves_metrics_and_closes(server: tuple[MetricsServer, Logged]) -> None:
    srv, logged = server
    status, headers, body = split(exchange(srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["demo_bytes"].samples[0].value == 42
    status, headers, body = split(exchange(srv.port, b"HEAD /metrics HTTP/1.0\r\n\r\n"))
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    status, headers, body = split(exchange(srv.port, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n"))
    assert headers["content-encoding"] == "gzip" and body[:2] == b"\x1f\x8b"
    assert logged.lines == []


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 200),
        (b"GET /other HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"OPTIONS /metrics HTTP/1.1\r\n\r\n", 204),
        (b"GET /metrics HTTP/1.1\r\nAccept: text/plain; version=a\r\n\r\n", 200),
        (b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n", 200),
        (b"GET /metrics HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET /metrics HTTP/3.0\r\n\r\n", 505),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000, 431),
    ],
)
def test_status_codes(server: tuple[MetricsServer, Logged], request_bytes: bytes, status: int) -> None:
    srv, logged = server
    got, headers, _ = split(exchange(srv.port, request_bytes))
    assert got == status
    assert headers["connection"] == "close"
    if status == 405:
        assert headers["allow"] == "GET, HEAD, OPTIONS"
    # Only malformed requests are logged (here through a plain callback; the real log is rate-limited).
    assert [kind for kind, _ in logged.lines] == (["request"] if status in (400, 431, 505) else [])
    assert srv.responses == {status: 1}


def test_a_failing_collector_is_a_500_and_one_line() -> None:
    class Broken:
        def collect(self) -> Iterator[object]:
            raise RuntimeError("broken collector")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Broken())  # type: ignore[arg-type]
    srv, logged = serve(registry)
    try:
        for _ in range(3):
            assert split(exchange(srv.port, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == 500
        assert split(exchange(srv.port, b"GET / HTTP/1.1\r\n\r\n"))[0] == 200  # still serving
    finally:
        srv.close()
    assert logged.lines == [("error", "rendering /metrics failed: RuntimeError: broken collector")] * 3


def test_slow_client_is_cut_off_at_the_timeout(registry: CollectorRegistry) -> None:
    srv, _ = serve(registry, client_timeout_s=0.5)
    try:
        with (
            socket.create_connection(("127.0.0.1", srv.port)) as idle,
            socket.create_connection(("127.0.0.1", srv.port)) as trickle,
        ):
            trickle.sendall(b"GET /metrics HTTP/1.1\r\nX: ")
            started = time.monotonic()
            for _ in range(3):  # bytes that keep coming do not extend the deadline
                time.sleep(0.1)
                trickle.sendall(b"a")
            closed_by_server(trickle, 2.0)
            assert time.monotonic() - started < 1.2  # 0.5 s from connecting, not from the last byte
            closed_by_server(idle, 1.0)
        assert srv.dropped == {"timeout": 2, "evicted": 0}
        # A client that finishes in time is served.
        assert split(exchange(srv.port, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == 200
    finally:
        srv.close()


def test_at_the_limit_the_oldest_connection_makes_room(registry: CollectorRegistry) -> None:
    srv, logged = serve(registry, max_connections=4, client_timeout_s=30)
    socks = []
    try:
        for _ in range(4):
            socks.append(socket.create_connection(("127.0.0.1", srv.port)))
            socks[-1].sendall(b"GET /metrics HTTP/1.1\r\n")  # never finished
        time.sleep(0.2)
        assert len(srv._conns) == 4
        # A real request still gets through; the oldest idle connection pays.
        assert split(exchange(srv.port, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == 200
        closed_by_server(socks[0], 1.0)
        for s in socks[1:]:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)  # still open, nothing sent
        assert srv.dropped == {"timeout": 0, "evicted": 1}
        assert [kind for kind, _ in logged.lines] == ["limit"]
    finally:
        for s in socks:
            s.close()
        srv.close()


def test_flood_of_idle_connections_costs_no_threads(registry: CollectorRegistry) -> None:
    srv, _ = serve(registry, max_connections=50, client_timeout_s=30)
    threads = threading.active_count()
    socks = []
    try:
        for _ in range(300):
            socks.append(socket.create_connection(("127.0.0.1", srv.port)))
        for _ in range(20):
            started = time.monotonic()
            assert split(exchange(srv.port, b"GET /metrics HTTP/1.1\r\n\r\n", timeout_s=1.0))[0] == 200
            assert time.monotonic() - started < 1.0
        assert threading.active_count() == threads
        assert len(srv._conns) <= 50
        assert srv.dropped["evicted"] >= 250
    finally:
        for s in socks:
            s.close()
        srv.close()


def test_close_is_idempotent_and_frees_the_port(registry: CollectorRegistry) -> None:
    srv, _ = serve(registry)
    idle = socket.create_connection(("127.0.0.1", srv.port))
    threads = threading.active_count()
    srv.close()
    srv.close()
    assert threading.active_count() == threads - 1
    closed_by_server(idle, 1.0)
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1.0)
    never_started = MetricsServer(CollectorRegistry(), "127.0.0.1", 0)
    never_started.close()
    never_started.close()


def test_bind_failure_raises_and_leaks_nothing(registry: CollectorRegistry) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MetricsServer(registry, "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError):
            server.start()
    assert server._wake_r.fileno() == -1 and server._wake_w.fileno() == -1


def test_limits_are_validated() -> None:
    for bad in ({"max_connections": 0}, {"client_timeout_s": 0.0}, {"client_timeout_s": float("nan")}):
        with pytest.raises(ValueError):
            MetricsServer(CollectorRegistry(), "127.0.0.1", 0, **bad)  # type: ignore[arg-type]
