// SPDX-License-Identifier: GPL-2.0
/* procstat: per-process memory. When a task is switched out
 * (tp_btf/sched_switch) its mm is read and kept per tgid in a bounded hash
 * map that user space batch-reads on a timer; entries leave the map when
 * the thread group dies (tp_btf/sched_process_exit). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "core_fixes.bpf.h"
#include "procstat.h"

/* errno values are ABI. */
#define EEXIST 17
/* Re-read the leader's comm at least every this many switches. */
#define PROCSTAT_COMM_REFRESH 64

/* The rss counter indices (MM_FILEPAGES, ...) live in an anonymous enum,
 * which CO-RE enum relocations cannot name: user space reads them from
 * kernel BTF and sets these before load. */
const volatile __u32 mm_filepages = 0;
const volatile __u32 mm_anonpages = 1;
const volatile __u32 mm_swapents = 2;
const volatile __u32 mm_shmempages = 3;
/* Possible CPUs whose per-CPU rss parts are summed (from user space). */
const volatile __u32 nr_cpus = 1;
/* Read per-CPU parts with plain loads through bpf_rdonly_cast (6.2+)
 * instead of bpf_probe_read_kernel calls (set when the kernel has it). */
const volatile bool direct_percpu_reads = false;
/* Track only the tgids present in `pid_filter`. */
const volatile bool filter_pids = false;

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/* New processes not tracked because `procs` was full (cumulative). */
__u64 dropped_full = 0;
/* per_cpu_ptr(p, cpu) == p + cpu_offset[cpu]; set by learn_cpu_offsets. */
__s64 cpu_offset[PROCSTAT_MAX_CPUS];
__u32 cpu_offsets_known = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct procstat_entry);
} procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);	/* user space sizes it to the --pid list */
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

/* Only its address is used, to learn the per-CPU offsets. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cpu_anchor SEC(".maps");

/* A pointer as a plain number: stored to and reloaded from this CPU's slot,
 * the verifier forgets it was a pointer (needs CAP_PERFMON, as tracing does). */
static __always_inline __u64 launder(volatile __u64 *slot, const void *ptr)
{
	*slot = (__u64)ptr;
	return *slot;
}

/* The kernel's BTF has no __percpu type tags here (gcc-built kernels) and,
 * without CONFIG_KALLSYMS_ALL, no per-CPU variable can be a __ksym, so
 * bpf_per_cpu_ptr() cannot reach a percpu_counter's parts. A per-CPU array
 * map gives both sides of the translation instead: struct bpf_array holds
 * its value's __percpu address and bpf_map_lookup_percpu_elem() (5.19+)
 * returns each CPU's copy; the difference is that CPU's offset. The
 * offsets never change after boot. Run once with BPF_PROG_TEST_RUN. */
static __always_inline void learn_offsets(void)
{
	__u32 zero = 0, cpu;
	volatile __u64 *slot;
	__u64 array, pcpu_value, value;
	void *copy;

	slot = bpf_map_lookup_elem(&cpu_anchor, &zero);
	if (!slot)
		return;
	array = launder(slot, &cpu_anchor);
	if (bpf_probe_read_kernel(&pcpu_value, sizeof(pcpu_value),
				  (void *)array + bpf_core_field_offset(struct bpf_array, pptrs)))
		return;
	for (cpu = 0; cpu < PROCSTAT_MAX_CPUS && cpu < nr_cpus; cpu++) {
		copy = bpf_map_lookup_percpu_elem(&cpu_anchor, &zero, cpu);
		if (!copy)
			return;
		value = launder(slot, copy);
		cpu_offset[cpu] = value - pcpu_value;
	}
	cpu_offsets_known = 1;
}

SEC("raw_tp")
int learn_cpu_offsets(void *ctx)
{
	learn_offsets();
	return 0;
}

/* Four s32 at addr, with plain loads: the address is viewed as a struct
 * timespec64 (16 bytes of integers in every kernel), the type the verifier
 * then checks the loads against; a bad address faults into zeros. */
static __always_inline void read_window(__u64 addr, __s32 window[4])
{
	const void *w = bpf_rdonly_cast((void *)addr, bpf_core_type_id_kernel(struct timespec64));

	window[0] = *(const __s32 *)(w + 0);
	window[1] = *(const __s32 *)(w + 4);
	window[2] = *(const __s32 *)(w + 8);
	window[3] = *(const __s32 *)(w + 12);
}

/* Order of the rss counters in the arrays below. */
enum { RSS_FILE, RSS_ANON, RSS_SHMEM, RSS_SWAP, RSS_N };

/* Add each CPU's part of the four percpu rss counters to count[].
 *
 * A percpu_counter's `count` lags by up to the batch size (max(32,
 * 2 * nr_cpus) pages) per CPU, the rest sitting in each CPU's s32 part.
 * /proc/PID/status sums the parts (get_mm_counter_sum), so do we, over all
 * possible CPUs (an offline CPU's part is folded into `count` and zeroed).
 * The parts are read without the counter's lock, as the kernel's lockless
 * readers do: a fold racing with us may be seen half-done, one batch off.
 * Since 6.5 the mm's four counters share one per-CPU allocation
 * (percpu_counter_init_many): then one 16-byte read per CPU fetches all. */
static __always_inline void add_percpu_parts(__s64 count[RSS_N], const __u64 parts[RSS_N], __u32 *flags)
{
	__u64 lo = parts[0], hi = parts[0];
	__u32 cpu, i, slot[RSS_N];
	__s32 part, window[RSS_N];

	for (i = 1; i < RSS_N; i++) {
		lo = parts[i] < lo ? parts[i] : lo;
		hi = parts[i] > hi ? parts[i] : hi;
	}
	if (!lo) /* atomic layout: the counts are exact */
		return;
	if (!cpu_offsets_known) {
		*flags |= PROCSTAT_F_RSS_INEXACT;
		return;
	}
	if (hi - lo == (RSS_N - 1) * sizeof(__s32)) {
		for (i = 0; i < RSS_N; i++)
			slot[i] = ((parts[i] - lo) / sizeof(__s32)) & (RSS_N - 1);
		for (cpu = 0; cpu < PROCSTAT_MAX_CPUS && cpu < nr_cpus; cpu++) {
			if (direct_percpu_reads) {
				read_window(lo + cpu_offset[cpu], window);
			} else if (bpf_probe_read_kernel(window, sizeof(window), (void *)(lo + cpu_offset[cpu]))) {
				*flags |= PROCSTAT_F_RSS_INEXACT;
				continue;
			}
			for (i = 0; i < RSS_N; i++)
				count[i] += window[slot[i]];
		}
		return;
	}
	for (cpu = 0; cpu < PROCSTAT_MAX_CPUS && cpu < nr_cpus; cpu++) {
		for (i = 0; i < RSS_N; i++) {
			if (bpf_probe_read_kernel(&part, sizeof(part), (void *)(parts[i] + cpu_offset[cpu])))
				*flags |= PROCSTAT_F_RSS_INEXACT;
			else
				count[i] += part;
		}
	}
}

/* Negative sums read as 0, as in the kernel. */
static __always_inline __u64 pages(__s64 count)
{
	return count < 0 ? 0 : count;
}

/* Out of line: the zeroed record is built only for a new process. */
static __noinline struct procstat_entry *new_entry(__u32 tgid)
{
	struct procstat_entry fresh = {};
	/* int: before Linux 6.4 the map operations the JIT calls directly (hash maps)
	 * return a 32-bit int, so a long would hold -EEXIST as 0xffffffef. */
	int err;

	fresh.tgid = tgid;
	err = bpf_map_update_elem(&procs, &tgid, &fresh, BPF_NOEXIST);
	if (err && err != -EEXIST) {
		__sync_fetch_and_add(&dropped_full, 1);
		return NULL;
	}
	return bpf_map_lookup_elem(&procs, &tgid);
}

static __always_inline void sample_task(struct task_struct *task)
{
	struct mm_struct *mm = task->mm;
	struct procstat_entry *e;
	__s64 count[RSS_N];
	__u64 parts[RSS_N], rss;
	__u32 tgid, flags = 0;
	bool fresh_entry = false;
	__u64 now_jiffies, exec_id;

	if (!mm) /* kernel thread */
		return;
	tgid = task->tgid;
	if (filter_pids && !bpf_map_lookup_elem(&pid_filter, &tgid))
		return;
	/* The group's last thread may be switched out after sched_process_exit
	 * removed the entry (the tracepoint precedes exit_mm since 6.16). */
	if (task->signal->live.counter == 0)
		return;
	e = bpf_map_lookup_elem(&procs, &tgid);
	if (!e) {
		e = new_entry(tgid);
		if (!e)
			return;
		fresh_entry = true;
	}
	procstat_read_rss_counter(mm, mm_filepages, &count[RSS_FILE], &parts[RSS_FILE]);
	procstat_read_rss_counter(mm, mm_anonpages, &count[RSS_ANON], &parts[RSS_ANON]);
	procstat_read_rss_counter(mm, mm_shmempages, &count[RSS_SHMEM], &parts[RSS_SHMEM]);
	procstat_read_rss_counter(mm, mm_swapents, &count[RSS_SWAP], &parts[RSS_SWAP]);
	add_percpu_parts(count, parts, &flags);
	e->rss_file_pages = pages(count[RSS_FILE]);
	e->rss_anon_pages = pages(count[RSS_ANON]);
	e->rss_shmem_pages = pages(count[RSS_SHMEM]);
	e->swap_pages = pages(count[RSS_SWAP]);
	rss = e->rss_file_pages + e->rss_anon_pages + e->rss_shmem_pages;
	if (rss > e->rss_max_pages)
		e->rss_max_pages = rss;
	e->total_vm_pages = mm->total_vm;
	e->data_vm_pages = mm->data_vm;
	e->stack_vm_pages = mm->stack_vm;
	e->hiwater_rss_pages = mm->hiwater_rss;
	if (!mm_pgtables_bytes(mm, &e->pgtables_bytes))
		flags |= PROCSTAT_F_NO_PGTABLES;
	e->flags = flags;
	/* The clock is read once per scheduler tick and process: cheaper
	 * than a clock read on every switch, and precise to a tick. */
	now_jiffies = bpf_jiffies64();
	if (now_jiffies != e->last_seen_jiffies) {
		e->last_seen_jiffies = now_jiffies;
		e->last_seen_ns = bpf_ktime_get_ns();
	}
	/* The comm changes with exec, which counts in self_exec_id (the new mm
	 * may reuse the freed one's address, so the mm cannot tell); a rename
	 * (prctl PR_SET_NAME) shows within PROCSTAT_COMM_REFRESH switches. */
	exec_id = task->group_leader->self_exec_id;
	if (fresh_entry || e->exec_id != exec_id || !(e->switches % PROCSTAT_COMM_REFRESH)) {
		e->exec_id = exec_id;
		bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), task->group_leader->comm);
	}
	__sync_fetch_and_add(&e->switches, 1);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(procstat_switch, bool preempt, struct task_struct *prev)
{
	sample_task(prev);
	return 0;
}

/* Drop the entry once the whole thread group is gone (signal->live reached
 * 0 before this tracepoint), so the map holds live processes only. */
static __always_inline void forget_task(struct task_struct *task)
{
	__u32 tgid = task->tgid;

	if (task->signal->live.counter == 0)
		bpf_map_delete_elem(&procs, &tgid);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(procstat_exit, struct task_struct *task)
{
	forget_task(task);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
