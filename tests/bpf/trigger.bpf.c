// SPDX-License-Identifier: GPL-2.0
/* Test object for the libbpf binding: records syscalls a test fires on
 * purpose, and can flood its ring buffer on demand (BPF_PROG_TEST_RUN). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "records.bpf.h"
#include "trigger.h"

EXPORT_RECORD(trigger_event);

const volatile __u32 target_tgid = 0;
const volatile __u32 flood_records = 0;
const volatile char label[8] = "";
const volatile __u8 raw_key[4] = {};

__u64 submitted = 0;
__u64 dropped = 0;
__u64 uprobe_hits = 0;
__u64 uprobe_cookie_sum = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* count per low 16 bits of the argument */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} percpu_hits SEC(".maps");

static __always_inline void emit(__u64 arg, long id)
{
	struct trigger_event *e;
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&dropped, 1);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->arg = arg;
	e->seq = __sync_fetch_and_add(&submitted, 1);
	e->syscall_nr = id;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->cpu = bpf_get_smp_processor_id();
	e->pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	__u32 key, zero = 0;
	__u64 arg, one = 1, *count;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	arg = PT_REGS_PARM1_CORE_SYSCALL(regs);
	if ((arg >> 16) != TRIGGER_MAGIC)
		return 0;
	emit(arg, id);
	key = arg & 0xffff;
	count = bpf_map_lookup_elem(&counts, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
	count = bpf_map_lookup_elem(&percpu_hits, &zero);
	if (count)
		*count += 1;
	return 0;
}

static long flood_one(__u32 i, void *ctx)
{
	emit(i, -1);
	return 0;
}

/* Run with BPF_PROG_TEST_RUN: submits flood_records records. */
SEC("raw_tp")
int flood(void *ctx)
{
	bpf_loop(flood_records, flood_one, NULL, 0);
	return 0;
}

/* Attached by the tests to libc's getpid (and getppid) for one pid. */
SEC("uprobe")
int on_getpid(void *ctx)
{
	__sync_fetch_and_add(&uprobe_hits, 1);
	__sync_fetch_and_add(&uprobe_cookie_sum, bpf_get_attach_cookie(ctx));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
