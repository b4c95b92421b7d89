"""memleak: exact leaks of C programs the test compiles, kernel objects a child holds, and the encoders."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import requires_bpf
from memwatcher import kernel
from memwatcher.cli import app
from memwatcher.elf import function_offsets
from memwatcher.symbolize import Frame
from memwatcher.tools import memleak
from memwatcher.tools.memleak import (
    USER_FUNCTIONS,
    KernelMemleak,
    LeakReport,
    LeakStack,
    MemleakOptions,
    UserMemleak,
    _frame_json,
    encode_pprof,
    format_folded,
    kernel_programs,
    report_json,
)

MEMWATCHER = [sys.executable, "-m", "memwatcher.cli"]
PAGE = os.sysconf("SC_PAGE_SIZE")

# Leaking function -> (count, bytes each); the C program below has the same numbers.
EXPECTED = {
    "leak_malloc": (7, 123),
    "leak_calloc": (5, 200),
    "leak_realloc": (3, 5000),
    "leak_memalign": (4, 300),
    "leak_aligned": (6, 256),
    "leak_mmap": (2, 3 * PAGE),
}

LEAKY_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static void *volatile sink;
static long page;

__attribute__((noinline)) void *leak_malloc(void) { return malloc(123); /* AT:leak_malloc */ }
__attribute__((noinline)) void *leak_calloc(void) { return calloc(4, 50); /* AT:leak_calloc */ }
__attribute__((noinline)) void *leak_realloc(void)
{
	char *p = malloc(10);
	p = realloc(p, 1000);
	return realloc(p, 5000); /* AT:leak_realloc */
}
__attribute__((noinline)) void *leak_memalign(void)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, 300)) /* AT:leak_memalign */
		abort();
	return p;
}
__attribute__((noinline)) void *leak_aligned(void) { return aligned_alloc(128, 256); /* AT:leak_aligned */ }
__attribute__((noinline)) void *leak_mmap(void)
{
	return mmap(NULL, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* AT:leak_mmap */
}
__attribute__((noinline)) void *leak_late(void) { return malloc(77); /* AT:leak_late */ }
__attribute__((noinline)) void *leak_many(void) { return malloc(16); }

/* Every kind of allocation, each freed again: must never be reported. */
__attribute__((noinline)) void churn(void)
{
	for (int i = 0; i < 100; i++) {
		void *p;
		free(malloc(64 + i));
		free(calloc(3, 33));
		free(realloc(realloc(malloc(8), 4000), 9000));
		if (posix_memalign(&p, 256, 500) == 0)
			free(p);
		free(aligned_alloc(64, 128));
		free(malloc(300000)); /* served by mmap inside malloc */
		p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		munmap(p, page);
		p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		p = mremap(p, page, 4 * page, MREMAP_MAYMOVE);
		munmap(p, 4 * page);
	}
}

/* Allocated on one thread, freed on another: balances to zero. */
#define SHARED 1000
static void *shared[SHARED];
__attribute__((noinline)) void *thread_alloc(void *arg)
{
	for (int i = 0; i < SHARED; i++)
		shared[i] = malloc(48);
	return arg;
}
static void *thread_free(void *arg)
{
	for (int i = 0; i < SHARED; i++)
		free(shared[i]);
	return arg;
}

/* A thread whose first allocator call is free(): glibc makes its arena there. */
static void *first_call_free(void *p)
{
	free(p);
	return NULL;
}
/* Address space, no memory: glibc reserves each arena's heap and thread stacks so. */
__attribute__((noinline)) void *reserve_only(void)
{
	return mmap(NULL, 1024 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
}

static void leak_all(void)
{
	for (int i = 0; i < 7; i++) sink = leak_malloc();
	for (int i = 0; i < 5; i++) sink = leak_calloc();
	for (int i = 0; i < 3; i++) sink = leak_realloc();
	for (int i = 0; i < 4; i++) sink = leak_memalign();
	for (int i = 0; i < 6; i++) sink = leak_aligned();
	for (int i = 0; i < 2; i++) sink = leak_mmap();
	churn();
	pthread_t t;
	pthread_create(&t, NULL, thread_alloc, NULL);
	pthread_join(t, NULL);
	pthread_create(&t, NULL, thread_free, NULL);
	pthread_join(t, NULL);
}

static int wait_line(const char *want)
{
	char line[64];
	if (!fgets(line, sizeof(line), stdin))
		return 0;
	return strncmp(line, want, strlen(want)) == 0;
}

static void say(const char *what) { printf("%s\n", what); fflush(stdout); }

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "run";
	page = sysconf(_SC_PAGESIZE);
	if (!strcmp(mode, "run")) { /* --command: leaks right at start-up, then exits */
		leak_all();
		return 0;
	}
	if (!strcmp(mode, "many")) {
		for (int i = 0; i < 20000; i++) sink = leak_many();
		return 0;
	}
	if (!strcmp(mode, "exec")) { /* --pid: leak, then exec into "wait" (those leaks die) */
		say("ready");
		if (!wait_line("go")) return 1;
		for (int i = 0; i < 9; i++) sink = leak_late();
		execl("/proc/self/exe", argv[0], "wait", (char *)NULL);
		return 1;
	}
	if (!strcmp(mode, "wait")) { /* --pid: leak on request */
		say("ready");
		if (!wait_line("go")) return 1;
		leak_all();
		say("done");
		if (!wait_line("late")) return 1;
		for (int i = 0; i < 9; i++) sink = leak_late();
		say("done");
		wait_line("exit");
		return 0;
	}
	if (!strcmp(mode, "reserve")) { /* --pid: reservations, and an arena made inside free() */
		say("ready");
		if (!wait_line("go")) return 1;
		for (int i = 0; i < 3; i++) sink = reserve_only();
		for (int i = 0; i < 4; i++) {
			pthread_t t;
			pthread_create(&t, NULL, first_call_free, malloc(100));
			pthread_join(t, NULL);
		}
		for (int i = 0; i < 9; i++) sink = leak_late();
		say("done");
		wait_line("exit");
		return 0;
	}
	if (!strcmp(mode, "pipes")) { /* kernel: hold N pipes, then close them */
		int n = atoi(argv[2]);
		int (*fds)[2] = calloc(n, sizeof(*fds));
		struct rlimit rl;
		getrlimit(RLIMIT_NOFILE, &rl);
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		say("ready");
		if (!wait_line("go")) return 1;
		for (int i = 0; i < n; i++)
			if (pipe(fds[i])) { perror("pipe"); return 1; }
		say("done");
		if (!wait_line("close")) return 1;
		for (int i = 0; i < n; i++) { close(fds[i][0]); close(fds[i][1]); }
		say("done");
		wait_line("exit");
		return 0;
	}
	if (!strcmp(mode, "pages")) { /* kernel: touch N pages, then unmap them */
		long n = atol(argv[2]);
		char *p = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		madvise(p, n * page, MADV_NOHUGEPAGE);
		say("ready");
		if (!wait_line("go")) return 1;
		for (long i = 0; i < n; i++) p[i * page] = 1;
		say("done");
		if (!wait_line("free")) return 1;
		munmap(p, n * page);
		say("done");
		wait_line("exit");
		return 0;
	}
	return 2;
}
"""


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("memleak")
    src = d / "leaky.c"
    src.write_text(LEAKY_C)
    exe = d / "leaky"
    subprocess.run(
        ["gcc", "-g", "-O0", "-fno-omit-frame-pointer", "-pthread", "-o", str(exe), str(src)],
        check=True,
    )
    return exe


def line_of(marker: str) -> int:
    for number, text in enumerate(LEAKY_C.splitlines(), start=1):
        if f"AT:{marker} " in text:
            return number
    raise AssertionError(marker)


class Child:
    """A child process driven line by line over stdin/stdout; always killed at the end."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.expect("ready")

    def send(self, line: str, expect: str = "done") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        if expect:
            self.expect(expect)

    def expect(self, what: str) -> None:
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == what

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@contextmanager
def _child(argv: list[str]) -> Iterator[Child]:
    child = Child(argv)
    try:
        yield child
    finally:
        child.close()


def by_leaf(stacks: list[dict]) -> dict[str, dict]:
    """JSON stacks keyed by their innermost function."""
    out: dict[str, dict] = {}
    for s in stacks:
        if s["frames"]:
            out.setdefault(s["frames"][0]["symbol"], s)
    return out


def functions(stack: dict) -> list[str]:
    return [f["symbol"] or "" for f in stack["frames"]]


def check_exact_leaks(report: dict, source_name: str) -> None:
    ids = [s["stack_id"] for s in report["stacks"]]
    assert len(ids) == len(set(ids)), "a stack reported in several rows"
    leaves = by_leaf(report["stacks"])
    for func, (count, size) in EXPECTED.items():
        assert func in leaves, f"{func} not reported; leaves: {sorted(k for k in leaves if k)}"
        stack = leaves[func]
        assert (stack["outstanding_allocs"], stack["outstanding_bytes"]) == (count, count * size), func
        top = stack["frames"][0]
        assert top["file"].endswith(source_name) and top["line"] == line_of(func), top
        assert "leak_all" in functions(stack)
    for s in report["stacks"]:
        names = functions(s)
        assert "churn" not in names, "freed allocations were reported"
        assert "thread_alloc" not in names, "cross-thread frees did not balance"


# ---------------------------------------------------------------- user space, real BPF


@requires_bpf
def test_pid_exact_leaks_and_min_age(leaky: Path) -> None:
    with _child([str(leaky), "wait"]) as child:
        with UserMemleak(child.proc.pid) as leaks:
            assert leaks.skipped == []
            child.send("go")
            check_exact_leaks(report_json(leaks.read(top=None)), "leaky.c")
            time.sleep(1.0)
            child.send("late")
            young = by_leaf(report_json(leaks.read(top=None))["stacks"])
            assert young["leak_late"]["outstanding_bytes"] == 9 * 77
            old = report_json(leaks.read(top=None, min_age_s=0.8))
            old_leaves = by_leaf(old["stacks"])
            assert "leak_late" not in old_leaves
            assert old_leaves["leak_malloc"]["outstanding_allocs"] == 7
            shown = leaks.read(top=None, show_allocs=True)
            late_id = young["leak_late"]["stack_id"]
            assert sorted(a.size_bytes for a in shown.allocations if a.stack_id == late_id) == [77] * 9
            combined = leaks.read(top=None)
            assert combined.lost_allocs == combined.lost_inflight == 0


def _bpf_links() -> int:
    links = 0
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # the directory's own fd, closed by now
            links += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf_link"
    return links


@requires_bpf
@pytest.mark.parametrize("links", ["uprobe_multi", "perf_event"])
def test_probes_one_link_per_program_or_one_per_offset(
    leaky: Path, links: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if links == "uprobe_multi" and not kernel.probe_feature("uprobe_multi").available:
        pytest.skip(f"uprobe_multi unavailable: {kernel.probe_feature('uprobe_multi').detail}")
    if links == "perf_event":  # what kernels before 6.6 get
        real = kernel.probe_feature
        monkeypatch.setattr(
            kernel, "probe_feature", lambda name: kernel.FeatureResult(False) if name == "uprobe_multi" else real(name)
        )
    before = _bpf_links()
    with _child([str(leaky), "wait"]) as child, UserMemleak(child.proc.pid) as leaks:
        assert leaks.multi_links == (links == "uprobe_multi")
        with open(leaks.library, "rb") as f:  # the oracle: libc's own symbol table
            offsets = function_offsets(f.fileno(), list(USER_FUNCTIONS))
        # entry and return of each function, the loader's _dl_debug_state, sched_process_exec
        expected = 4 if links == "uprobe_multi" else 2 * len(set(offsets.values())) + 2
        assert _bpf_links() - before == expected
        child.send("go")
        check_exact_leaks(report_json(leaks.read(top=None)), "leaky.c")
    assert _bpf_links() == before


def _copy_with_libraries(exe: Path, root: Path) -> None:
    """``exe`` as ``root``/leaky with the shared libraries it loads at their paths (copies: other inodes)."""
    shutil.copy2(exe, root / "leaky")
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, check=True).stdout
    for path in re.findall(r"(/\S+) \(0x", ldd):
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, root / path.lstrip("/"))


@requires_bpf
@pytest.mark.skipif(shutil.which("chroot") is None, reason="needs chroot(8)")
def test_pid_in_a_chroot_is_traced_in_its_own_files(leaky: Path, tmp_path: Path) -> None:
    # Its maps show our path of its libc (tmp_path/jail/lib/...), which it calls /lib/...: a
    # copy, not our /lib/... file. Probes and symbols must come from the files it maps.
    jail = tmp_path / "jail"
    jail.mkdir()
    _copy_with_libraries(leaky, jail)
    with _child(["chroot", str(jail), "/leaky", "wait"]) as child, UserMemleak(child.proc.pid) as leaks:
        assert leaks.library.startswith(f"/proc/{child.proc.pid}/")
        child.send("go")
        check_exact_leaks(report_json(leaks.read(top=None)), "leaky.c")


@requires_bpf
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
@pytest.mark.parametrize("host_side", ["nothing", "decoy"])
def test_pid_in_a_private_mount_namespace(leaky: Path, tmp_path: Path, host_side: str) -> None:
    # A statically linked program (the allocator is in it) at a path that, on our side, holds
    # nothing or a decoy: the same program with its lines moved, so its symbols would be wrong.
    static = tmp_path / "leaky-static"
    subprocess.run(
        ["gcc", "-g", "-O0", "-fno-omit-frame-pointer", "-static", "-pthread", "-o", str(static), "-x", "c", "-"],
        input=LEAKY_C,
        text=True,
        check=True,
    )
    app = tmp_path / "app"
    app.mkdir()
    if host_side == "decoy":
        subprocess.run(
            ["gcc", "-g", "-O0", "-static", "-pthread", "-o", str(app / "leaky"), "-x", "c", "-"],
            input="\n" * 40 + LEAKY_C,
            text=True,
            check=True,
        )
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy2(static, real / "leaky")
    script = f"mount --bind {real} {app} && exec {app}/leaky wait"
    with _child(["unshare", "-m", "--propagation", "private", "sh", "-c", script]) as child:
        assert (app / "leaky").exists() == (host_side == "decoy")
        with UserMemleak(child.proc.pid) as leaks:
            child.send("go")
            check_exact_leaks(report_json(leaks.read(top=None)), "<stdin>")


# An allocator library (used through --obj) whose free() maps memory for its own
# bookkeeping, through the library's own mmap: that call belongs to the free.
NESTING_ALLOCATOR_C = r"""
#define _GNU_SOURCE
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static char arena[1 << 20];
static size_t used;
static void *volatile books;

void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
	return (void *)syscall(SYS_mmap, addr, length, prot, flags, fd, offset);
}
void *malloc(size_t n)
{
	void *p = arena + used;
	used += (n + 15) & ~(size_t)15;
	return p;
}
void free(void *p)
{
	if (p && !books)
		books = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}
"""
NESTING_PROGRAM_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static void *volatile sink;
__attribute__((noinline)) void *leak_in_nest(void) { return malloc(100); }
int main(void)
{
	char line[16];
	printf("ready\n"); fflush(stdout);
	if (!fgets(line, sizeof(line), stdin)) return 1;
	for (int i = 0; i < 3; i++) sink = leak_in_nest();
	free(malloc(50));
	printf("done\n"); fflush(stdout);
	fgets(line, sizeof(line), stdin);
	return 0;
}
"""


@requires_bpf
def test_calls_inside_free_belong_to_the_free(tmp_path: Path) -> None:
    (tmp_path / "nest.c").write_text(NESTING_ALLOCATOR_C)
    (tmp_path / "prog.c").write_text(NESTING_PROGRAM_C)
    lib = tmp_path / "libnest.so"
    subprocess.run(["gcc", "-O2", "-fPIC", "-shared", "-o", str(lib), str(tmp_path / "nest.c")], check=True)
    prog = tmp_path / "prog"
    subprocess.run(
        ["gcc", "-g", "-O0", "-fno-omit-frame-pointer", "-o", str(prog), str(tmp_path / "prog.c")], check=True
    )
    with _child(["env", f"LD_PRELOAD={lib}", str(prog)]) as child:
        with UserMemleak(child.proc.pid, library=lib.name) as leaks:
            assert "mmap" not in leaks.skipped and "free" not in leaks.skipped
            child.send("go")
            stacks = report_json(leaks.read(top=None))["stacks"]
    assert [(s["outstanding_allocs"], s["outstanding_bytes"]) for s in stacks] == [(3, 300)]
    assert "leak_in_nest" in functions(stacks[0])


@requires_bpf
def test_address_space_reserved_with_prot_none_is_no_allocation(leaky: Path) -> None:
    # 3 x 4 MiB PROT_NONE by the program itself, and the arenas glibc reserves inside
    # free() for threads whose first call is a free: none of it is memory in use.
    with _child([str(leaky), "reserve"]) as child, UserMemleak(child.proc.pid) as leaks:
        child.send("go")
        stacks = report_json(leaks.read(top=None))["stacks"]
    assert by_leaf(stacks)["leak_late"]["outstanding_bytes"] == 9 * 77  # what is real still counts
    for stack in stacks:
        assert "reserve_only" not in functions(stack)
        assert "first_call_free" not in functions(stack)
        assert stack["outstanding_bytes"] < 1 << 20, functions(stack)


@requires_bpf
def test_pid_exec_drops_what_the_old_image_left(leaky: Path) -> None:
    """--pid across execve: the old image's allocations are gone, the new one's are exact."""
    with _child([str(leaky), "exec"]) as child:
        with UserMemleak(child.proc.pid) as leaks:
            child.send("go", expect="ready")  # 9 x 77 B leaked, then exec: the new image is ready

            def phantoms(report: dict) -> list[dict]:
                # The old image's 9 x 77 B (its addresses no longer name leak_late: match the sizes).
                return [s for s in report["stacks"] if (s["outstanding_allocs"], s["outstanding_bytes"]) == (9, 693)]

            # The exec is noticed within a poll interval, and the new image's unwind tables are
            # loaded then: until that, its stacks would be walked with frame pointers alone (and
            # under emulation the new image can leak first). So it leaks once the exec was seen.
            deadline = time.monotonic() + 10
            while True:
                report = report_json(leaks.read(top=None))
                if not phantoms(report) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert not phantoms(report), "the old image's leaks were kept"
            child.send("go")
            report = report_json(leaks.read(top=None))
            check_exact_leaks(report, "leaky.c")
            assert report["lost_allocs"] == 0


@requires_bpf
def test_command_sees_startup_leaks_and_exits(leaky: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", f"{leaky} run", "-f", "json", "-i", "30", "--top", "50"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    reports = [json.loads(line) for line in proc.stdout.splitlines()]
    assert reports[-1]["final"] is True
    check_exact_leaks(reports[-1], "leaky.c")
    assert "command exited with status 0" in proc.stderr


@requires_bpf
def test_command_combined_only_and_pprof_file(leaky: Path, tmp_path: Path) -> None:
    out = tmp_path / "leaks.pb.gz"
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", f"{leaky} run", "--combined-only", "-f", "pprof", "--file", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    profile = decode_profile(gzip.decompress(out.read_bytes()))
    leaves = {}
    for sample in profile["samples"]:
        if sample["locations"]:  # else a stack the kernel could not record (counted as a stack error)
            leaf = profile["location_names"][sample["locations"][0]][0]
            leaves.setdefault(leaf, sample["values"])
    for func, (count, size) in EXPECTED.items():
        assert leaves[func] == [count, count * size], func


@requires_bpf
def test_sample_rate_estimate(leaky: Path) -> None:
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", f"{leaky} many", "--sample-rate", "10", "-f", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["estimated"] is True and report["sample_rate"] == 10
    many = by_leaf(report["stacks"])["leak_many"]
    # 20000 allocations sampled 1 in 10: 2000 expected, binomial sd ~42 (2%); allow 10%.
    assert abs(many["outstanding_allocs"] - 20000) <= 2000
    assert many["outstanding_bytes"] == many["outstanding_allocs"] * 16


@requires_bpf
@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--pid", "999999999"], 1, "no process with pid 999999999"),
        (["--command", "/nonexistent/leaky"], 127, "command not found"),
        (["--pid", "2"], 1, "kernel thread"),
        (["--command", "true", "--obj", "/lib/x86_64-linux-gnu/libm.so.6"], 1, "no malloc"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], code: int, text: str) -> None:
    if "--obj" in args and not Path(args[-1]).exists():
        pytest.skip("no libm at the Debian path")
    proc = subprocess.run([*MEMWATCHER, "memleak", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert text in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- kernel, real BPF


def _stack_functions(stack: LeakStack) -> set[str]:
    return {f.function or "" for f in stack.frames}


def _pipe_objects(report: LeakReport) -> int:
    """Outstanding objects alloc_pipe_info itself allocated (two per pipe: the
    pipe_inode_info and its buffer array). Slab pages allocated underneath it
    (allocate_slab) are excluded: SLUB keeps them in its partial lists after the
    objects are freed, a number that depends on the CPUs and slab settings."""
    return sum(
        s.outstanding_allocs
        for s in report.stacks
        if "alloc_pipe_info" in _stack_functions(s) and "allocate_slab" not in _stack_functions(s)
    )


@requires_bpf
def test_kernel_pipes_held_then_freed(leaky: Path) -> None:
    n = 1000
    with _child([str(leaky), "pipes", str(n)]) as child:
        with KernelMemleak(pid=child.proc.pid) as leaks:
            child.send("go")
            report = leaks.read(top=None)
            held = _pipe_objects(report)
            # Exact, except allocations whose stack could not be recorded (counted, without frames).
            assert 2 * n - report.stack_errors <= held <= 2 * n
            assert any(
                "do_pipe2" in _stack_functions(s) for s in report.stacks if "alloc_pipe_info" in _stack_functions(s)
            )
            child.send("close")
            # close() frees both objects of every pipe synchronously (free_pipe_info).
            assert _settles(lambda: _pipe_objects(leaks.read(top=None)), lambda left: left == 0)


def _settles(read: Callable[[], int], ok: Callable[[int], bool], timeout_s: float = 10.0) -> bool:
    """Whether ``read()`` satisfies ``ok`` within ``timeout_s``: the kernel frees
    pipes and pages asynchronously (RCU callbacks, per-CPU page lists)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if ok(value) or time.monotonic() > deadline:
            return ok(value)
        time.sleep(0.2)


def _in_page_fault(stack: LeakStack) -> bool:
    # do_anonymous_page is inlined into __handle_mm_fault by some builds (Debian 6.1).
    return any("handle_mm_fault" in f or f == "do_anonymous_page" for f in _stack_functions(stack))


@requires_bpf
def test_kernel_pages_touched_are_counted(leaky: Path) -> None:
    n = 2048
    with _child([str(leaky), "pages", str(n)]) as child:
        with KernelMemleak(pid=child.proc.pid) as leaks:
            child.send("go")
            touched = [s for s in leaks.read(top=None).stacks if _in_page_fault(s)]
            page_bytes = sum(s.outstanding_bytes for s in touched)
            assert n * PAGE <= page_bytes <= n * PAGE * 1.05
            child.send("free")

            def bytes_left() -> int:
                return sum(s.outstanding_bytes for s in leaks.read(top=None).stacks if _in_page_fault(s))

            assert _settles(bytes_left, lambda left: left < n * PAGE // 10)


# ---------------------------------------------------------------- kernel variant selection (no BPF)

K515 = {
    "kmalloc": ["long unsigned int", "const void *", "size_t", "size_t", "gfp_t"],
    "kmalloc_node": ["long unsigned int", "const void *", "size_t", "size_t", "gfp_t", "int"],
    "kmem_cache_alloc": ["long unsigned int", "const void *", "size_t", "size_t", "gfp_t"],
    "kmem_cache_alloc_node": ["long unsigned int", "const void *", "size_t", "size_t", "gfp_t", "int"],
    "kfree": ["long unsigned int", "const void *"],
    "kmem_cache_free": ["long unsigned int", "const void *", "const char *"],
    "mm_page_alloc": ["struct page *", "unsigned int", "gfp_t", "int"],
    "mm_page_free": ["struct page *", "unsigned int"],
    "mm_page_free_batched": ["struct page *"],
    "percpu_alloc_percpu": ["bool", "bool", "size_t", "size_t", "void *", "int", "void *"],
    "percpu_free_percpu": ["void *", "int", "void *"],
}
K61 = {
    **{k: v for k, v in K515.items() if not k.endswith("_node")},
    "kmalloc": ["long unsigned int", "const void *", "size_t", "size_t", "gfp_t", "int"],
    "kmem_cache_alloc": ["long unsigned int", "const void *", "struct kmem_cache *", "gfp_t", "int"],
    "kmem_cache_free": ["long unsigned int", "const void *", "const struct kmem_cache *"],
    "percpu_alloc_percpu": [
        "long unsigned int",
        "bool",
        "bool",
        "size_t",
        "size_t",
        "void *",
        "int",
        "void *",
        "size_t",
        "gfp_t",
    ],
}
K618 = dict(K61)  # 6.18 kept the 6.1 argument lists


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (
            K515,
            {"kmalloc", "kmalloc_node", "kmem_cache_alloc_sizes", "kmem_cache_alloc_node", "percpu_alloc_short"},
        ),
        (K61, {"kmalloc", "kmem_cache_alloc_cache", "percpu_alloc_call_site"}),
        (K618, {"kmalloc", "kmem_cache_alloc_cache", "percpu_alloc_call_site"}),
    ],
    ids=["5.15", "6.1", "6.18"],
)
def test_kernel_variant_selection(facts: dict[str, list[str]], expected: set[str]) -> None:
    chosen = kernel_programs(facts.get, percpu=True)
    assert chosen.problems == []
    common = {"kfree", "kmem_cache_free", "mm_page_alloc", "mm_page_free", "mm_page_free_batched", "percpu_free_percpu"}
    assert set(chosen.enabled) == expected | common
    without_percpu = kernel_programs(facts.get)
    assert not any(p.startswith("percpu") for p in without_percpu.enabled)


def test_kernel_variant_selection_reports_unknown_or_missing() -> None:
    facts = dict(K61, kmem_cache_alloc=["long unsigned int", "const void *", "int"])
    del facts["kfree"]
    problems = kernel_programs(facts.get).problems
    assert any("kmem_cache_alloc has unknown arguments" in p for p in problems)
    assert any("kfree is missing" in p for p in problems)


def test_variant_selection_matches_running_kernel() -> None:
    if not kernel.btf_available():
        pytest.skip("needs kernel BTF")
    assert kernel_programs(kernel.tracepoint_params, percpu=True).problems == []


# ---------------------------------------------------------------- encoders (no BPF)


def _report() -> LeakReport:
    inner = Frame(0x1010, module="/bin/x", function="helper", file="x.c", line=3, inlined=True)
    outer = Frame(0x1010, module="/bin/x", function="leaker", symbol="leaker", offset=16, file="x.c", line=9)
    main = Frame(0x2000, module="/bin/x", function="main", file="x.c", line=20)
    raw = Frame(0x7F00)
    stacks = [
        LeakStack(1, 4096, 2, 1.5, [0x1010, 0x2000], [inner, outer, main]),
        LeakStack(2, 100, 1, 0.5, [0x7F00], [raw]),
    ]
    return LeakReport("2024-01-01T00:00:00.000+00:00", "pid 1", stacks, 4196, 3, False, 1)


def test_folded_is_root_first_weighted_by_bytes() -> None:
    lines = format_folded(_report()).splitlines()
    assert lines == ["main;leaker;helper 4096", "0x7f00 100"]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        if key & 7 == 0:
            value, pos = _varint(data, pos)
            out.append((key >> 3, value))
        elif key & 7 == 2:
            n, pos = _varint(data, pos)
            out.append((key >> 3, data[pos : pos + n]))
            pos += n
        else:
            raise AssertionError(f"unexpected wire type {key & 7}")
    return out


def _packed(data: bytes) -> list[int]:
    values, pos = [], 0
    while pos < len(data):
        v, pos = _varint(data, pos)
        values.append(v)
    return values


def decode_profile(data: bytes) -> dict:
    """A profile.proto decode from the wire format, independent of the encoder."""
    top = _fields(data)
    strings = [bytes(v).decode() for f, v in top if f == 6]
    functions = {}
    for f, v in top:
        if f == 5:
            fields = dict(_fields(v))
            functions[fields[1]] = strings[fields.get(2, 0)]
    location_names = {}
    for f, v in top:
        if f == 4:
            fields = _fields(v)
            loc_id = dict(fields)[1]
            location_names[loc_id] = [functions[dict(_fields(line))[1]] for k, line in fields if k == 4]
    samples = []
    for f, v in top:
        if f == 2:
            fields = dict(_fields(v))
            # proto3 omits an empty packed field: a sample whose stack was not recorded has no locations.
            samples.append({"locations": _packed(fields.get(1, b"")), "values": _packed(fields[2])})
    types = [(strings[dict(_fields(v))[1]], strings[dict(_fields(v))[2]]) for f, v in top if f == 1]
    return {"strings": strings, "samples": samples, "location_names": location_names, "types": types}


def test_pprof_decodes_to_the_report() -> None:
    profile = decode_profile(gzip.decompress(encode_pprof(_report())))
    assert profile["strings"][0] == ""
    assert profile["types"] == [("inuse_objects", "count"), ("inuse_space", "bytes")]
    first, second = profile["samples"]
    assert first["values"] == [2, 4096] and second["values"] == [1, 100]
    # The inlined helper and leaker share one location (innermost line first), then main.
    assert [profile["location_names"][i] for i in first["locations"]] == [["helper", "leaker"], ["main"]]


def _go_pprof_raw(profile: Path, home: Path) -> str:
    """``go tool pprof -raw``: Go's own reader (golang-go, from scripts/install.sh)."""
    env = {**os.environ, "HOME": str(home), "PPROF_TMPDIR": str(home)}
    proc = subprocess.run(["go", "tool", "pprof", "-raw", str(profile)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@requires_bpf
@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go's pprof (golang-go, scripts/install.sh)")
def test_pprof_reads_in_go_pprof_with_mappings_period_and_duration(leaky: Path, tmp_path: Path) -> None:
    out = tmp_path / "leaks.pb.gz"
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", f"{leaky} run", "-f", "pprof", "--file", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    raw = _go_pprof_raw(out, tmp_path)
    head, _, rest = raw.partition("Samples:")
    samples_text, _, rest = rest.partition("Locations")
    locations_text, _, mappings_text = rest.partition("Mappings")
    assert "PeriodType: allocations count" in head and re.search(r"^Period: 1$", head, re.M), head
    duration_ms = float(re.search(r"^Duration: ([\d.]+)", head, re.M).group(1).rstrip("."))  # pprof prints ms
    assert duration_ms > 0, head
    # Mappings: the executable first (pprof's "main binary"), with its GNU build id as readelf shows it.
    mappings = [line.split() for line in mappings_text.strip().splitlines()]
    assert mappings[0][2] == str(leaky), mappings
    notes = subprocess.run(["readelf", "-n", str(leaky)], capture_output=True, text=True).stdout
    assert mappings[0][3] == re.search(r"Build ID: ([0-9a-f]+)", notes).group(1)
    assert any(m[2].endswith(("libc.so.6",)) for m in mappings), mappings
    # Each location names its mapping; each sample's leaf function carries the exact leak.
    leaf_of = {}
    for line in locations_text.strip().splitlines():
        match = re.match(r"\s*(\d+): 0x[0-9a-f]+ M=(\d+) (\S+)", line)
        if match:
            assert int(match.group(2)) >= 1, line
            leaf_of[match.group(1)] = match.group(3)
    leaves = {}
    for line in samples_text.strip().splitlines()[1:]:
        values, _, ids = line.partition(":")
        if ids.split():
            leaves.setdefault(leaf_of[ids.split()[0]], [int(v) for v in values.split()])
    for func, (count, size) in EXPECTED.items():
        assert leaves.get(func) == [count, count * size], (func, leaves.get(func))


def test_json_report_shape() -> None:
    data = report_json(_report())
    assert set(data["stacks"][0]) == {
        "stack_id", "outstanding_bytes", "outstanding_allocs", "oldest_age_s", "frames",
        "verdict", "growth_bytes_per_s", "growing_for_s", "allocated_bytes", "allocations", "freed_bytes", "frees",
    }  # fmt: skip
    frame_keys = {"address", "module", "symbol", "linkage_name", "offset", "module_offset", "file", "line", "inlined"}
    assert set(data["stacks"][0]["frames"][0]) == frame_keys
    assert data["unwind"] is None  # kernel-style report: no user-space unwinder
    json.dumps(data)


class _TracerBuilt(Exception):
    """Stops the CLI where it would start tracing."""


def test_cli_defaults_are_the_options_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI spells its defaults again: without flags it must ask for MemleakOptions().
    built: list[MemleakOptions] = []

    def tracer(options: MemleakOptions, pid: int | None = None) -> None:
        built.append(options)
        raise _TracerBuilt

    monkeypatch.setattr(memleak, "KernelMemleak", tracer)
    monkeypatch.setattr(kernel, "require_bpf", lambda: None)
    result = CliRunner().invoke(app, ["memleak", "--kernel"])
    assert isinstance(result.exception, _TracerBuilt), result.output
    assert built == [MemleakOptions()]


@requires_bpf
def test_command_exec_wrapper_reports_only_the_real_program(leaky: Path) -> None:
    """Outstanding allocations die with the image that made them (execve)."""
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", f"sh -c 'exec {leaky} run'", "-f", "json", "-i", "30", "--top", "50"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    check_exact_leaks(report, "leaky.c")
    modules = {f["module"] for s in report["stacks"] for f in s["frames"]}
    assert not any(m and m.endswith("/dash") for m in modules), modules


@requires_bpf
def test_command_exit_status_is_passed_on() -> None:
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", "sh -c 'exit 3'", "-f", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert "command exited with status 3" in proc.stderr


def _state(pid: int) -> str:
    """One-letter process state from /proc/PID/stat ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


@requires_bpf
def test_command_held_at_exit_ends_when_memwatcher_is_killed(tmp_path: Path) -> None:
    """The hold at exit is a ptrace stop: the kernel releases it when its tracer dies."""
    tracer = subprocess.Popen(
        [*MEMWATCHER, "memleak", "--command", "sh -c 'echo exiting'", "-f", "json", "--file", str(tmp_path / "o")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tracer.stderr is not None and tracer.stdout is not None
        line = ""
        while "tracing pid" not in line:
            line = tracer.stderr.readline()
            assert line, "memwatcher ended before tracing"
        pid = int(line.split("tracing pid ")[1].split(";")[0])
        assert tracer.stdout.readline().strip() == "exiting"
        deadline = time.monotonic() + 10
        while _state(pid) != "t" and time.monotonic() < deadline:  # the exit hold: a tracing stop
            time.sleep(0.001)
        os.kill(tracer.pid, signal.SIGSTOP)  # keep memwatcher from releasing it
        time.sleep(0.3)
        assert _state(pid) == "t", "the command was not held at exit"
        os.kill(tracer.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _state(pid) not in ("", "Z") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(pid) in ("", "Z"), f"command left in state {_state(pid)}"
    finally:
        tracer.kill()
        tracer.wait()


@requires_bpf
def test_folded_export_carries_every_stack_whatever_top(leaky: Path, tmp_path: Path) -> None:
    out = tmp_path / "leaks.folded"
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", f"{leaky} run", "-f", "folded", "--file", str(out), "--top", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    weights: dict[str, int] = {}
    for line in out.read_text().splitlines():
        stack, bytes_ = line.rsplit(" ", 1)
        leaf = stack.split(";")[-1]
        weights[leaf] = weights.get(leaf, 0) + int(bytes_)
    for func, (count, size) in EXPECTED.items():
        assert weights.get(func) == count * size, (func, weights)


def test_json_frame_without_symbol_keeps_its_module_offset() -> None:
    frame = _frame_json(Frame(0x7F0000001234, module="/opt/app/libx.so", elf_address=0x1234))
    assert frame["symbol"] is None and frame["module"] == "/opt/app/libx.so" and frame["module_offset"] == 0x1234


@requires_bpf
def test_duration_ends_with_one_final_report(leaky: Path) -> None:
    with _child([str(leaky), "wait"]) as child:
        proc = subprocess.run(
            [*MEMWATCHER, "memleak", "--pid", str(child.proc.pid), "-i", "0.5", "-d", "1.2", "-f", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    finals = [json.loads(line)["final"] for line in proc.stdout.splitlines()]
    assert finals == [False, False, True], finals  # at 0.5 s, 1.0 s, and the partial interval to 1.2 s


@requires_bpf
@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "is a directory"), ("missing/out.folded", "does not exist")],
)
def test_unusable_file_is_refused_before_tracing(tmp_path: Path, name: str, problem: str) -> None:
    proc = subprocess.run(
        [*MEMWATCHER, "memleak", "--command", "true", "-f", "pprof", "--file", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and problem in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "tracing" not in proc.stderr


@requires_bpf
def _folded_leaves(path: Path) -> set[str]:
    text = path.read_text() if path.exists() else ""
    return {line.rsplit(" ", 1)[0].split(";")[-1] for line in text.splitlines()}


def test_folded_file_holds_the_last_complete_report_when_killed(leaky: Path, tmp_path: Path) -> None:
    """Rewritten (atomically) at every interval: SIGKILL keeps the last one, not an empty file."""
    out = tmp_path / "leaks.folded"
    with _child([str(leaky), "wait"]) as child:
        tracer = subprocess.Popen(
            [*MEMWATCHER, "memleak", "--pid", str(child.proc.pid), "-i", "0.3", "-f", "folded", "--file", str(out)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tracer.stderr is not None
            while "tracing" not in tracer.stderr.readline():
                pass
            child.send("go")
            deadline = time.monotonic() + 30
            # Every leak in one report (an interval may fall between the child's leaks), then SIGKILL.
            while time.monotonic() < deadline and not set(EXPECTED) <= _folded_leaves(out):
                time.sleep(0.1)
            tracer.kill()
            tracer.wait()
        finally:
            tracer.kill()
            tracer.wait()
    assert set(EXPECTED) <= _folded_leaves(out), out.read_text()
    assert not list(tmp_path.glob(".leaks.folded.*.tmp"))
