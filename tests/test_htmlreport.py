"""The HTML report: data safety and size (no browser), then the page in headless Chromium,
offline: it renders without console messages and shows the leak sites; last, real memleak
on a leaking C program with --html. Screenshots land in the test's tmp directory."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import requires_bpf
from memwatcher.htmlreport import LeakHistory, ReportError, history_from_jsonl, write_report

MEMWATCHER = [sys.executable, "-m", "memwatcher.cli"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
requires_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian package chromium)")

HOSTILE = "</script><script>document.title='pwned'</script><!--<img src=x onerror=alert(1)>"


def _frame(symbol: str | None, file: str | None = None, line: int = 0, module: str = "/opt/app/server") -> dict:
    return {
        "address": 0x5555_0000_1000 + line,
        "module": module,
        "symbol": symbol,
        "linkage_name": None,
        "offset": 4,
        "module_offset": 0x1000 + line,
        "file": file,
        "line": line or None,
        "inlined": False,
    }


def _report(traced_s: float, leak_bytes: int, final: bool = False) -> dict[str, Any]:
    """A memleak JSON object: a growing leak, a stable pool, a hostile symbol, an unsymbolized frame,
    and 100,000 bytes in 50 allocations from stacks beyond the listed ones (as with --top)."""
    main = _frame("main", "/src/server.c", 90)
    stacks = [
        (1, leak_bytes, leak_bytes // 100, "growing", 1000.0, traced_s, [_frame("parse_request", "/src/parse.c", 12)]),
        (2, 51_200, 100, "stable", 0.0, 0.0, [_frame("pool_grow", "/src/pool.c", 30)]),
        (3, 4_096, 1, "stable", 0.0, 0.0, [_frame(HOSTILE, "/src/<evil>.c", 7)]),
        (2**63 + 5, 640, 10, None, None, None, [_frame(None, line=0x40)]),
    ]
    return {
        "time": "2026-12-03T07:00:00.000+00:00",
        "target": "pid 4242",
        "final": final,
        "traced_s": traced_s,
        "estimated": False,
        "sample_rate": 1,
        "total_outstanding_bytes": sum(s[1] for s in stacks) + 100_000,
        "total_outstanding_allocs": sum(s[2] for s in stacks) + 50,
        "lost_allocs": 0,
        "lost_stacks": 0,
        "stack_errors": 3,
        "lost_inflight": 0,
        "missed_frees": 0,
        "unwind": None,
        "stacks": [
            {
                "stack_id": sid,
                "outstanding_bytes": b,
                "outstanding_allocs": a,
                "oldest_age_s": traced_s,
                "verdict": v,
                "growth_bytes_per_s": g,
                "growing_for_s": gf,
                "frames": [*frames, main],
            }
            for sid, b, a, v, g, gf, frames in stacks
        ],
        "allocations": [],
        "run": {"command": "/opt/app/server --port 8080", "pid": 4242, "kernel": "6.18.0", "options": {"top": 10}},
    }


def _jsonl(path: Path, reads: int = 8) -> Path:
    lines = [json.dumps(_report(i * 0.5, 10_000 * (i + 1), final=i == reads - 1)) for i in range(reads)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _embedded(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="memleak-data">(.*?)</script>', html, re.S)
    assert found is not None
    return json.loads(found.group(1))


# ---------------------------------------------------------------- the file, no browser


def test_data_cannot_break_out_and_nothing_is_fetched(tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    write_report(history_from_jsonl(_jsonl(tmp_path / "in.jsonl").open()), page)
    html = page.read_text()
    assert html.count("</script") == 2  # the data's and the code's own
    assert "<!--" not in html and "<img" not in html
    data = _embedded(html)
    assert HOSTILE in [f[0] for f in data["frames"]]  # intact once parsed
    # Nothing to fetch: no src/href attributes outside the data, and a policy that forbids any connection.
    assert not re.search(r"\s(src|href)=", html.replace(html[html.index('id="memleak-data"') :], ""))
    assert "default-src 'none'" in html
    assert data["stacks"][3][0] == str(2**63 + 5)  # stack ids beyond 2^53 stay exact (strings)
    assert data["frames"][data["stacks"][3][7][0]][0] == "server+0x1040"  # module+offset when unsymbolized


def test_series_keep_every_read_and_the_final_one(tmp_path: Path) -> None:
    data = history_from_jsonl(_jsonl(tmp_path / "in.jsonl", reads=8).open()).page_data()
    series = data["series"]
    assert series["t_s"] == [i * 0.5 for i in range(8)]
    assert series["bytes"][-1] == data["meta"]["total_outstanding_bytes"]
    plotted = dict(series["stacks"])
    assert plotted["1"] == [10_000 * (i + 1) for i in range(8)]
    assert data["meta"]["intervals"] == 8 and data["meta"]["run"]["pid"] == 4242


def test_a_long_run_is_thinned_not_unbounded() -> None:
    history = LeakHistory()
    for i in range(5000):
        history.add(_report(float(i), 1000 * i, final=i == 4999))
    t = history.page_data()["series"]["t_s"]
    assert len(t) <= 2000 and t[0] == 0.0 and t[-1] == 4999.0
    steps = {b - a for a, b in itertools.pairwise(t[:-1])}
    assert len(steps) == 1  # evenly thinned (the final read is added to the end whatever its step)


def _synthetic(stacks: int, depth: int, seed: int = 1) -> dict[str, Any]:
    """``stacks`` stacks of ``depth`` frames drawn from 5000 call sites (C++-length names and paths)."""
    rng = random.Random(seed)
    sites = [
        _frame(
            f"service::module{i % 97}::Handler{i}::process_request_part",
            f"/build/service/src/module{i % 97}/handler{i % 500}.cc",
            10 + i % 900,
            f"/usr/lib/x86_64-linux-gnu/libservice{i % 40}.so.1",
        )
        for i in range(5000)
    ]
    report = _report(60.0, 1, final=True)
    report["stacks"] = [
        {
            "stack_id": rng.getrandbits(64),
            "outstanding_bytes": rng.randrange(16, 1 << 20),
            "outstanding_allocs": rng.randrange(1, 1000),
            "oldest_age_s": rng.random() * 100,
            "verdict": rng.choice(["growing", "stable", "freed", None]),
            "growth_bytes_per_s": rng.random() * 1e4,
            "growing_for_s": rng.random() * 60,
            "frames": [rng.choice(sites) for _ in range(depth)],
        }
        for _ in range(stacks)
    ]
    report["total_outstanding_bytes"] = sum(s["outstanding_bytes"] for s in report["stacks"])
    return report


@pytest.fixture(scope="module")
def big_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    history = LeakHistory()
    report = _synthetic(10_000, 20)
    for i in range(60):
        history.add({**report, "traced_s": float(i), "final": i == 59})
    page = tmp_path_factory.mktemp("big") / "big.html"
    write_report(history, page)
    return page


def test_ten_thousand_stacks_fit_in_5_mb(big_page: Path) -> None:
    size_bytes = big_page.stat().st_size
    print(f"10,000 stacks x 20 frames, 60 reads: {size_bytes} bytes")
    assert size_bytes <= 5 * 1024 * 1024


@pytest.mark.parametrize(
    ("content", "output", "problem"),
    [
        (None, "r.html", "cannot read"),
        ("not json\n", "r.html", "line 1 is not JSON"),
        ('{"total_outstanding_bytes": NaN}\n', "r.html", "line 1 is not JSON (NaN is not a JSON number"),
        ('{"stacks": 3}\n', "r.html", "line 1 is not a memleak JSON report"),
        (
            '{"stacks": [{"outstanding_bytes": "9"}], "total_outstanding_bytes": 9, "total_outstanding_allocs": 1}\n',
            "r.html",
            "line 1 is not a memleak JSON report",
        ),
        ("\n", "r.html", "holds no memleak report"),
        (b"\x89PNG\xff\xfe", "r.html", "is not text"),
        ("{}", "missing/r.html", "does not exist"),
    ],
)
def test_report_bad_input_is_one_clear_line(
    tmp_path: Path, content: str | bytes | None, output: str, problem: str
) -> None:
    source = tmp_path / "in.jsonl"
    if isinstance(content, bytes):
        source.write_bytes(content)
    elif content is not None:
        source.write_text(content)
    proc = subprocess.run(
        [*MEMWATCHER, "report", str(source), "-o", str(tmp_path / output)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and problem in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / output).exists()


def test_history_rejects_what_is_not_memleak_json() -> None:
    with pytest.raises(ReportError):
        LeakHistory().add({"procstat": []})


# ---------------------------------------------------------------- in Chromium


def _offline_chromium(profile: Path) -> list[str]:
    """Headless Chromium as root, with a fresh profile, making no connection of its own (any fetch fails)."""
    return [
        "--headless",
        "--no-sandbox",  # root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",
        "--window-size=1280,900",
    ]


def render(page: Path, workdir: Path, screenshot: Path | None = None, hash_part: str = "") -> str:
    """The page's DOM after its scripts ran in headless Chromium, offline (and a screenshot).

    Fails on any console message: the page writes none when all is well.
    """
    assert CHROMIUM is not None
    profile = workdir / f"chromium-profile-{len(list(workdir.glob('chromium-profile-*')))}"
    flags = [*_offline_chromium(profile), "--enable-logging=stderr", "--v=0"]
    url = page.as_uri() + hash_part
    proc = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    if screenshot is not None:
        shot = subprocess.run(
            [CHROMIUM, *flags, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120
        )
        assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr
    return proc.stdout


def _body(dom: str) -> str:
    found = re.search(r"<body[^>]*>", dom)
    assert found is not None
    return found.group(0)


@requires_chromium
def test_report_renders_offline_with_leak_sites_and_metadata(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    proc = subprocess.run(
        [*MEMWATCHER, "report", str(_jsonl(tmp_path / "in.jsonl")), "-o", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    dom = render(page, tmp_path, tmp_path / "report.png")
    assert 'data-rendered="ok"' in _body(dom), _body(dom)
    flame = dom[dom.index('id="flame"') : dom.index('id="hover"')]
    for name in ("parse_request", "pool_grow", "main", "parse.c:12"):
        assert name in flame, name
    assert "the stacks listed: 132.8 KiB of 230.4 KiB outstanding" in flame
    table = dom[dom.index('id="stacks"') : dom.index('id="meta"')]
    assert "parse_request" in table and ">growing<" in table and "server+0x1040" in table
    # The hostile symbol is text on the page, not markup.
    assert "&lt;/script&gt;&lt;script&gt;" in dom and "pwned" not in dom.split("<title>")[1].split("</title>")[0]
    assert "--port 8080" in dom and "6.18.0" in dom  # run metadata
    assert dom.count("<path") >= 2  # total and stack lines over time


@requires_chromium
def test_search_from_the_url_highlights_and_filters(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_report(history_from_jsonl(_jsonl(tmp_path / "in.jsonl").open()), page)
    dom = render(page, tmp_path, hash_part="#search=pool_")
    assert 'data-rendered="ok"' in _body(dom)
    hits = re.findall(r'class="f[^"]* hit"[^>]*>([^<]*)', dom)
    assert hits and all(h.startswith("pool_grow") for h in hits), hits
    table = dom[dom.index('id="stacks"') : dom.index('id="meta"')]
    assert "pool_grow" in table and "parse_request" not in table  # the table shows matching stacks only
    assert "matched 50.0 KiB" in dom


@requires_chromium
def test_ten_thousand_stacks_render(big_page: Path, tmp_path: Path) -> None:
    dom = render(big_page, tmp_path, tmp_path / "big.png")
    body = _body(dom)
    assert 'data-rendered="ok"' in body, body
    took = re.search(r'data-render-ms="(\d+)"', body)
    print(f"10,000 stacks rendered in {took.group(1) if took else '?'} ms")


class Browser:
    """Headless Chromium driven over its DevTools pipe (fds 3 and 4, NUL-terminated JSON messages).

    For what --dump-dom cannot show: the page after clicks. Console messages and
    uncaught exceptions are collected in ``console``.
    """

    def __init__(self, page: Path, workdir: Path) -> None:
        assert CHROMIUM is not None
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        # Chromium's ends above 9, so that moving them to 3 and 4 overwrites neither.
        low = (to_chrome, from_chrome)
        to_chrome, from_chrome = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in low)
        for fd in low:
            os.close(fd)
        flags = [*_offline_chromium(workdir / "chromium-pipe-profile"), "--remote-debugging-pipe", "about:blank"]
        shell = f'exec "$0" "$@" 3<&{to_chrome} 4>&{from_chrome} {to_chrome}<&- {from_chrome}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", shell, CHROMIUM, *flags],  # bash: dash takes single-digit fds only
            pass_fds=(to_chrome, from_chrome),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer = b""
        self._next_id = 0
        self.console: list[str] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Runtime.enable", session=True)
        self.call("Page.navigate", session=True, url=page.as_uri())
        deadline = time.monotonic() + 60
        while self.evaluate("document.body ? document.body.dataset.rendered : ''") not in ("ok", "error"):
            assert time.monotonic() < deadline, "the page did not render in 60 s"
            time.sleep(0.05)

    def call(self, method: str, session: bool = False, **params: Any) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value")) for a in reply["params"]["args"]))
            elif reply.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(reply["params"]["exceptionDetails"]))
            elif reply.get("id") == self._next_id:
                assert "error" not in reply, reply
                return reply["result"]

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], 60)
            assert ready, "no answer from Chromium in 60 s"
            chunk = os.read(self._read, 1 << 16)
            assert chunk, "Chromium closed its DevTools pipe"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._read)
        os.close(self._write)


# Clicks through the page: weights, zoom in and out, a stack's frames, sorting.
INTERACT_JS = r"""
(() => {
  const frames = () => [...document.querySelectorAll("#flame .f")];
  const node = (name) => frames().find((d) => d.textContent.startsWith(name) && !d.classList.contains("anc"));
  const width = (d) => parseFloat(d.style.width);
  const rows = () => [...document.querySelectorAll("#stacks tbody tr.row")].map((r) => r.cells[0].textContent);
  const out = { full: width(frames()[0]), poolBytes: width(node("pool_grow")) };
  document.querySelector("input[value=allocs]").click();
  out.poolAllocs = width(node("pool_grow"));
  node("parse_request").click();
  out.zoomAncestors = frames().filter((d) => d.classList.contains("anc")).length;
  out.zoomWidth = width(node("parse_request"));
  out.zoomShows = frames().map((d) => d.textContent);
  document.getElementById("reset").click();
  out.resetAncestors = frames().filter((d) => d.classList.contains("anc")).length;
  out.byBytes = rows();
  document.querySelector("#stacks th[data-key=allocs]").click();
  out.byAllocs = rows();
  document.querySelector("#stacks tbody tr.row").click();
  out.detail = document.querySelector("#stacks tr.detail").textContent;
  return out;
})()
"""


@requires_chromium
def test_weights_zoom_and_table_respond_to_clicks(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_report(history_from_jsonl(_jsonl(tmp_path / "in.jsonl").open()), page)
    browser = Browser(page, tmp_path)
    try:
        assert browser.evaluate("document.body.dataset.rendered") == "ok"
        seen = browser.evaluate(INTERACT_JS)
    finally:
        browser.close()
    assert browser.console == []
    # The last read: parse_request 80,000 B in 800, pool_grow 51,200 B in 100, of 135,936 B in 911.
    assert seen["poolBytes"] == pytest.approx(seen["full"] * 51_200 / 135_936, abs=0.2)
    assert seen["poolAllocs"] == pytest.approx(seen["full"] * 100 / 911, abs=0.2)
    assert seen["zoomAncestors"] == 2 and seen["zoomWidth"] == pytest.approx(seen["full"], abs=0.2)
    assert not any(name.startswith("pool_grow") for name in seen["zoomShows"])
    assert seen["resetAncestors"] == 0
    assert [r.split()[0] for r in seen["byBytes"]] == [
        "parse_request",
        "pool_grow",
        "</script><script>document.title='pwned'</script><!--<img",
        "server+0x1040",
    ]
    assert [r.split()[0] for r in seen["byAllocs"]][2] == "server+0x1040"
    assert "parse.c:12" in seen["detail"] and "server.c:90" in seen["detail"] and "/opt/app/server" in seen["detail"]


# ---------------------------------------------------------------- memleak --html, real BPF

# Leaks from parse_request at a steady pace through two callers, keeps a pool from
# pool_grow, holds scratch_buffer's blocks for 1 s; runs argv[1] seconds and exits.
LEAKING_C = r"""
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static void *volatile sink;
__attribute__((noinline)) void *parse_request(size_t n) { return malloc(n); }
__attribute__((noinline)) void *pool_grow(void) { return malloc(512); }
__attribute__((noinline)) void *scratch_buffer(void) { return malloc(4096); }
__attribute__((noinline)) void handle_client(int i) { sink = parse_request(200 + i % 3 * 100); }
__attribute__((noinline)) void handle_admin(void) { sink = parse_request(1000); }
static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}
int main(int argc, char **argv)
{
	double run_s = argc > 1 ? atof(argv[1]) : 3, start = now();
	void *pool[200], *scratch[50];
	int pool_n = 0, held = 1;
	for (int i = 0; i < 50; i++) scratch[i] = scratch_buffer();
	for (int i = 0; now() - start < run_s; i++) {
		handle_client(i);
		if (i % 10 == 0) handle_admin();
		void *p = pool_grow();
		if (pool_n < 200) pool[pool_n++] = p;
		else { int k = rand() % pool_n; free(pool[k]); pool[k] = p; }
		if (held && now() - start > 1.0) {
			for (int k = 0; k < 50; k++) free(scratch[k]);
			held = 0;
		}
		usleep(2000);
	}
	return 0;
}
"""


@requires_bpf
def test_memleak_html_refuses_an_unwritable_file_before_tracing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", "true", "--html", str(tmp_path / "missing" / "r.html")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "tracing" not in proc.stderr


@requires_bpf
@requires_chromium
def test_memleak_html_end_to_end(tmp_path: Path) -> None:
    src, exe = tmp_path / "leaking.c", tmp_path / "leaking"
    src.write_text(LEAKING_C)
    subprocess.run(["gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-o", str(exe), str(src)], check=True)
    page = tmp_path / "leaks.html"
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", f"{exe} 3", "-i", "0.25", "-f", "json", "-n", "2", "--html", str(page)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    reads = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all(len(r["stacks"]) <= 2 for r in reads)  # --top limits what is printed, not the page
    assert reads[-1]["run"]["command"] == f"{exe} 3" and reads[-1]["run"]["kernel"] == os.uname().release
    assert f"HTML report written to {page}" in proc.stderr
    data = _embedded(page.read_text())
    names = {data["frames"][s[7][0]][0] for s in data["stacks"] if s[7]}
    assert {"parse_request", "pool_grow", "scratch_buffer"} <= names, names
    assert len(data["series"]["t_s"]) >= 4  # 12 reads when nothing is slow
    dom = render(page, tmp_path, tmp_path / "leaks.png")
    assert 'data-rendered="ok"' in _body(dom), _body(dom)
    flame = dom[dom.index('id="flame"') : dom.index('id="hover"')]
    for name in ("parse_request", "handle_client", "handle_admin", "pool_grow", "main"):
        assert name in flame, name
    table = dom[dom.index('id="stacks"') : dom.index('id="meta"')]
    assert "scratch_buffer" in table and ">freed<" in table and ">growing<" in table
    # Allocated and freed since tracing began, per stack: the scratch buffers all freed, the requests none.
    by_site = {data["frames"][s[7][0]][0]: s for s in data["stacks"] if s[7]}
    assert by_site["scratch_buffer"][8:10] == [50 * 4096, 50 * 4096]
    assert by_site["parse_request"][9] == 0 and by_site["parse_request"][8] > 0
    assert ">100%<" in table and ">0%<" in table
