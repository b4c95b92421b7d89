"""The libbpf binding against the real kernel: load, attach, maps, ring buffers, errors, cleanup."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import TEST_BPF_DIR, build_test_object, requires_bpf
from memwatcher.elf import function_offsets
from memwatcher.libbpf import (
    BTF,
    BPFObject,
    LibbpfError,
    LibbpfNotSupportedError,
    NotSupportedError,
    RingBuffer,
    VerifierError,
)
from memwatcher.records import load_header

pytestmark = requires_bpf

LAYOUT = load_header(TEST_BPF_DIR / "trigger.h")
MAGIC = LAYOUT.constants["TRIGGER_MAGIC"]


@pytest.fixture(scope="module")
def trigger_path() -> Path:
    return build_test_object("trigger")


def fire(values: list[int]) -> None:
    """Make getpgid() calls the test object records (the pids do not exist: ESRCH)."""
    for v in values:
        try:
            os.getpgid(MAGIC << 16 | v)
        except ProcessLookupError:
            pass


def open_trigger(path: Path, **rodata: int) -> BPFObject:
    obj = BPFObject.open(path)
    obj.rodata.target_tgid = os.getpid()
    for name, value in rodata.items():
        setattr(obj.rodata, name, value)
    return obj


def syscall_number(name: str) -> int | None:
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if os.uname().machine != "x86_64" or not header.is_file():
        return None
    m = re.search(rf"#define __NR_{name} (\d+)", header.read_text())
    return int(m.group(1)) if m else None


def bpf_fds() -> list[str]:
    """Descriptions of this process's BPF file descriptors (progs, maps, links)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("anon_inode:bpf"):
            out.append(target)
    return out


def test_ring_buffer_records_equal_what_was_fired(trigger_path: Path) -> None:
    values = list(range(200))
    with open_trigger(trigger_path) as obj:
        obj.load()
        rb = RingBuffer(obj.maps.events, LAYOUT.trigger_event)
        with obj.programs.on_sys_enter.attach():
            fire(values)
        events = rb.consume()
        assert len(events) == len(values) == obj.bss.submitted
        assert obj.bss.dropped == 0
        assert list(events["arg"]) == [MAGIC << 16 | v for v in values]
        assert list(events["seq"]) == list(range(len(values)))
        assert set(events["pid"]) == {os.getpid()}
        assert set(events["tid"]) == {threading.get_native_id()}
        assert set(events["comm"]) == {Path(f"/proc/{os.getpid()}/comm").read_text().strip().encode()[:15]}
        nr = syscall_number("getpgid")
        if nr is not None:
            assert set(events["syscall_nr"]) == {nr}
        assert np.all(np.diff(events["ts_ns"].astype(np.int64)) >= 0)


def test_ring_buffer_drains_in_batches_without_loss(trigger_path: Path) -> None:
    with open_trigger(trigger_path, flood_records=5000) as obj:
        obj.maps.events.max_entries = 1 << 20  # room for all 5000 records
        obj.load()
        rb = RingBuffer(obj.maps.events, LAYOUT.trigger_event, batch_records=7)
        obj.programs.flood.test_run()
        events = rb.consume()
        assert obj.bss.dropped == 0
        assert len(events) == 5000 == obj.bss.submitted
        assert list(events["seq"]) == list(range(5000))
        assert rb.consume().size == 0


def test_ring_buffer_overflow_is_counted(trigger_path: Path) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    with open_trigger(trigger_path, flood_records=1000) as obj:
        obj.maps.events.max_entries = page  # room for far fewer than 1000 records
        obj.load()
        rb = RingBuffer(obj.maps.events, LAYOUT.trigger_event)
        obj.programs.flood.test_run()
        kept = rb.consume()
        assert obj.bss.dropped > 0
        assert len(kept) + obj.bss.dropped == 1000
        assert len(kept) == obj.bss.submitted


def test_discard_counts_records(trigger_path: Path) -> None:
    with open_trigger(trigger_path, flood_records=300) as obj:
        obj.load()
        rb = RingBuffer(obj.maps.events, LAYOUT.trigger_event)
        obj.programs.flood.test_run()
        assert rb.discard() == 300
        assert rb.consume().size == 0


def test_maps_batch_and_per_key_reads_agree(trigger_path: Path) -> None:
    fired = [v % 37 for v in range(500)]
    with open_trigger(trigger_path) as obj:
        obj.load()
        with obj.programs.on_sys_enter.attach():
            fire(fired)
        counts = obj.maps.counts
        keys, values = counts.read_all(np.uint32, np.uint64)
        expected = {k: fired.count(k) for k in set(fired)}
        assert dict(zip(keys.tolist(), values.tolist())) == expected
        counts._batch_ok = False  # force the C get_next_key loop
        keys2, values2 = counts.read_all(np.uint32, np.uint64)
        assert dict(zip(keys2.tolist(), values2.tolist())) == expected
        assert sorted(int.from_bytes(k, "little") for k in counts.keys()) == sorted(expected)
        assert counts.lookup(np.uint32(5)) == expected[5].to_bytes(8, "little")
        assert counts.lookup(np.uint32(999)) is None
        counts.update(np.uint32(999), np.uint64(7))
        assert int.from_bytes(counts.lookup(999), "little") == 7
        assert counts.delete(999) is True
        assert counts.delete(999) is False
        _, per_cpu = obj.maps.percpu_hits.read_all(np.uint32, np.uint64)
        assert per_cpu.shape[1] >= os.cpu_count()
        assert int(per_cpu[0].sum()) == len(fired)


def test_batch_update_writes_every_entry(trigger_path: Path) -> None:
    with open_trigger(trigger_path) as obj:
        obj.load()
        counts = obj.maps.counts
        keys = np.arange(100, 400, dtype=np.uint32)
        counts.update_batch(keys, (keys * 3).astype(np.uint64))
        got_keys, got_values = counts.read_all(np.uint32, np.uint64)
        assert dict(zip(got_keys.tolist(), got_values.tolist())) == {k: 3 * k for k in range(100, 400)}
        with pytest.raises(LibbpfError):
            counts.update_batch(keys, keys)  # 4-byte values for an 8-byte map
        with pytest.raises(LibbpfError, match="batch-update"):
            more = np.arange(2000, dtype=np.uint32)  # past max_entries (1024)
            counts.update_batch(more, more.astype(np.uint64))


def test_rodata_is_config_before_load_and_frozen_after(trigger_path: Path) -> None:
    with BPFObject.open(trigger_path) as obj:
        assert obj.rodata.names() == ["target_tgid", "flood_records", "label", "raw_key"]
        obj.rodata.raw_key = b"\x00\x01\x00\x02"  # __u8[] is bytes, not a string
        assert obj.rodata.raw_key == b"\x00\x01\x00\x02"
        obj.rodata.label = "abc"
        obj.rodata.flood_records = 12
        assert (obj.rodata.label, obj.rodata.flood_records) == ("abc", 12)
        obj.load()
        assert obj.rodata.flood_records == 12
        with pytest.raises(LibbpfError, match="after load"):
            obj.rodata.flood_records = 1
        with pytest.raises(LibbpfError, match="nope"):
            _ = obj.bss.nope


def _libc() -> str:
    return next(
        line.split()[-1]
        for line in Path("/proc/self/maps").read_text().splitlines()
        if re.search(r"/libc[.-][^/]*so", line)
    )


def test_uprobe_by_function_name_and_pid(trigger_path: Path) -> None:
    with open_trigger(trigger_path) as obj:
        obj.programs.flood.autoload = False
        obj.load()
        with obj.programs.on_getpid.attach_uprobe(_libc(), "getpid", pid=os.getpid(), cookie=7):
            for _ in range(25):
                os.getpid()
        hits = obj.bss.uprobe_hits
        os.getpid()
        assert hits == 25
        assert obj.bss.uprobe_hits == 25  # detached: no more hits
        assert obj.bss.uprobe_cookie_sum == 25 * 7


def _has_uprobe_multi() -> bool:
    try:
        return BTF.vmlinux().enum_values("bpf_attach_type").get("BPF_TRACE_UPROBE_MULTI") is not None
    except LibbpfError:
        return False


@pytest.mark.skipif(not _has_uprobe_multi(), reason="uprobe_multi links need Linux >= 6.6")
def test_uprobe_multi_one_link_many_offsets_with_cookies(trigger_path: Path) -> None:
    libc = _libc()
    fd = os.open(libc, os.O_RDONLY)
    try:
        offsets = function_offsets(fd, ["getpid", "getppid"])
    finally:
        os.close(fd)
    before = bpf_fds()
    with open_trigger(trigger_path) as obj:
        obj.programs.flood.autoload = False
        obj.programs.on_getpid.set_expected_attach_type("trace_uprobe_multi")
        obj.load()
        link = obj.programs.on_getpid.attach_uprobe_multi(
            libc, [offsets["getpid"], offsets["getppid"]], cookies=[1, 100], pid=os.getpid()
        )
        with link:
            for _ in range(3):
                os.getpid()
            for _ in range(2):
                os.getppid()
            subprocess.run(["true"], check=True)  # another process: filtered out by pid
        os.getpid()
        assert (obj.bss.uprobe_hits, obj.bss.uprobe_cookie_sum) == (5, 3 * 1 + 2 * 100)
        assert link.closed and "uprobe_multi" in repr(link)
        with pytest.raises(LibbpfError) as e:  # loaded for a multi link: a perf-event uprobe is refused
            obj.programs.on_getpid.attach_uprobe(libc, "getpid", pid=os.getpid())
        assert e.value.errno == errno.EINVAL
    assert sorted(bpf_fds()) == sorted(before)


def test_set_expected_attach_type_unknown_to_the_kernel(trigger_path: Path) -> None:
    with open_trigger(trigger_path) as obj, pytest.raises(NotSupportedError, match="no BPF attach type"):
        obj.programs.on_getpid.set_expected_attach_type("no_such_type")


def test_btf_member_finds_nested_and_anonymous_members() -> None:
    btf = BTF.vmlinux()
    # union bpf_attr { struct { ... } link_create; ... }: link_create's first member sits at 0.
    assert btf.member("bpf_attr.link_create.prog_fd") == (0, 4)
    # task_struct.pid is a plain member; mm_struct's members live in an anonymous struct.
    assert btf.member("task_struct.pid")[1] == 4
    assert btf.member("mm_struct.mmap_base")[1] == 8
    assert btf.member("bpf_attr.link_create.no_such_member") is None
    assert btf.member("no_such_struct.x") is None


def test_close_leaves_nothing_loaded(trigger_path: Path) -> None:
    before = bpf_fds()
    obj = open_trigger(trigger_path)
    obj.load()
    link = obj.programs.on_sys_enter.attach()
    RingBuffer(obj.maps.events, LAYOUT.trigger_event)
    assert len(bpf_fds()) > len(before)
    obj.close()
    assert link.closed
    assert sorted(bpf_fds()) == sorted(before)
    obj.close()  # idempotent
    link.close()
    with pytest.raises(LibbpfError):
        obj.programs.on_sys_enter.attach()


def test_close_interrupted_anywhere_frees_each_pointer_once(trigger_path: Path) -> None:
    # A signal handler raises between two bytecodes of close(); the enclosing `with`
    # blocks then close again. Tried before every bytecode in turn, in a child process:
    # freeing a link twice (issue 16's crash) kills it.
    helper = Path(__file__).with_name("interrupt_close.py")
    proc = subprocess.run([sys.executable, str(helper), str(trigger_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"status {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert int(proc.stdout.split()[-1]) > 20, proc.stdout  # the closing took that many bytecodes


def test_programs_maps_and_btf_refuse_use_after_close(trigger_path: Path) -> None:
    obj = open_trigger(trigger_path)
    obj.close()
    for use in (
        lambda: obj.maps.counts.lookup(0),
        lambda: obj.maps.events.fd,
        lambda: obj.programs.on_sys_enter.autoload,
        lambda: obj.programs.on_sys_enter.attach(),
        lambda: obj.btf.find("trigger_event", "struct"),
        lambda: obj.rodata.target_tgid,
    ):
        with pytest.raises(LibbpfError, match="after close") as e:
            use()
        assert e.value.errno == errno.EBADF
    assert "closed" in repr(obj.maps.counts)


def test_corrupt_object_file(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.bpf.o"
    bad.write_bytes(b"\x7fELF" + os.urandom(512))
    with pytest.raises(LibbpfError) as e:
        BPFObject.open(bad)
    assert str(bad) in str(e.value)
    with pytest.raises(LibbpfError) as e:
        BPFObject.open(tmp_path / "absent.bpf.o")
    assert e.value.errno == errno.ENOENT


def test_unknown_program_and_map_names(trigger_path: Path) -> None:
    with BPFObject.open(trigger_path) as obj:
        with pytest.raises(LibbpfError, match="program 'no_such_prog'"):
            _ = obj.programs.no_such_prog
        with pytest.raises(LibbpfError, match="map 'no_such_map'"):
            _ = obj.maps["no_such_map"]


def test_uprobe_on_missing_function(trigger_path: Path) -> None:
    with open_trigger(trigger_path) as obj:
        obj.load()
        with pytest.raises(LibbpfError, match="no_such_function_xyz") as e:
            obj.programs.on_getpid.attach_uprobe("/bin/true", "no_such_function_xyz")
    # A function missing from a user binary is the caller's mistake, not a kernel limit.
    assert not isinstance(e.value, NotSupportedError)


@pytest.mark.parametrize("program", ["no_such_tracepoint", "no_such_function"])
def test_attaching_to_a_hook_the_kernel_lacks_is_not_supported(program: str) -> None:
    with BPFObject.open(build_test_object("missing_hooks")) as obj:
        obj.load()
        with pytest.raises(LibbpfNotSupportedError, match=f"memwatcher_{program}") as e:
            obj.programs[program].attach()
    assert isinstance(e.value, NotSupportedError)  # exit 77
    assert e.value.errno == errno.ENOENT
    assert e.value.feature.startswith(f"attach program '{program}'")


def test_map_update_with_wrong_key_size(trigger_path: Path) -> None:
    with open_trigger(trigger_path) as obj:
        obj.load()
        with pytest.raises(LibbpfError, match="counts") as e:
            obj.maps.counts.update(b"\x01\x02\x03", np.uint64(1))
        assert e.value.errno == errno.EINVAL
        assert "key size 3" in str(e.value)


def test_verifier_rejection_carries_the_log() -> None:
    path = build_test_object("rejected")
    with BPFObject.open(path) as obj:
        with pytest.raises(VerifierError) as e:
            obj.load()
    assert "out_of_bounds" in e.value.log
    assert "BEGIN PROG LOAD LOG" in e.value.log
    message = str(e.value)
    assert message.startswith("load BPF object 'rejected': rejected by the verifier: ")
    assert "ctx" in message  # the verifier's own verdict on the context access
