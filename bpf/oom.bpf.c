// SPDX-License-Identifier: GPL-2.0
/* oom: one record per OOM kill, as it happens.
 *
 * The OOM killer sends its victim SIGKILL and then marks it
 * (mm/oom_kill.c, __oom_kill_process: do_send_sig_info, mark_oom_victim), both
 * from the task that ran out of memory. So:
 *
 * - tp_btf/signal_generate remembers, per sending thread, the last task it
 *   sent SIGKILL to;
 * - tp_btf/mark_victim (oom:mark_victim) makes the record when the task
 *   marked is the one its thread just sent SIGKILL to. A mark without that
 *   SIGKILL is not a kill (a task already exiting is given access to memory
 *   reserves) and is only counted. Kernels whose mark_victim passes only the
 *   pid (before Linux 6.8 and its stable backports) find the victim's
 *   task_struct the same way.
 *
 * The victim's fields are read from its task_struct and mm through CO-RE; its
 * memory cgroup from task->cgroups, with the cgroup's page counter.
 *
 * Global or memory cgroup OOM, the failed allocation's order and gfp mask and
 * the cgroup whose limit was hit are fields of the killer's struct
 * oom_control, which no tracepoint passes. It is a local variable of the
 * caller of out_of_memory() (the page allocator, mem_cgroup_out_of_memory(),
 * sysrq), on the stack of the very thread this tracepoint runs in, a few
 * frames above the tracepoint's argument array; its `chosen` member holds the
 * victim (or, when the victim is another thread of the chosen process, that
 * process's leader). So the stack above the arguments is searched for the
 * victim's address, and a hit is taken as `chosen` only if the struct around
 * it is consistent: a known constraint, a memcg exactly when the constraint
 * is CONSTRAINT_MEMCG and then one of the victim's own memory cgroup or its
 * ancestors, an order in range, a non-zero totalpages. Members of a
 * memory.oom.group killed after the chosen victim reuse the oom_control found
 * for it. When nothing fits, those fields are reported unknown. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "records.bpf.h"
#include "core_fixes.bpf.h"
#include "oom.h"

EXPORT_RECORD(oom_kill);

/* Signal numbers are ABI. */
#define SIGKILL 9
/* Bytes of stack above the tracepoint's arguments searched for the killer's
 * struct oom_control, read in chunks of OOM_SCAN_CHUNK. */
#define OOM_SCAN_BYTES 8192
#define OOM_SCAN_CHUNK 256
#define OOM_SCAN_WORDS (OOM_SCAN_CHUNK / 8)
/* Orders above this are not page allocations (MAX_PAGE_ORDER is 10 on x86). */
#define OOM_MAX_ORDER 16
/* The OOM killer marks its victim microseconds after sending SIGKILL, with
 * the victim's task lock held; an older SIGKILL from the same thread is some
 * other kill. */
#define OOM_SIGKILL_MAX_AGE_NS 1000000000ULL

/* The rss counter indices (MM_FILEPAGES, ...) live in an anonymous enum,
 * which CO-RE enum relocations cannot name: user space sets them. */
const volatile __u32 mm_filepages = 0;
const volatile __u32 mm_anonpages = 1;
const volatile __u32 mm_swapents = 2;
const volatile __u32 mm_shmempages = 3;
/* Tests: find the victim from the pid alone, as kernels whose mark_victim
 * passes no task_struct must. */
const volatile bool victim_from_pid = false;

__u64 events_dropped = 0;	/* kills not reported: the ring buffer was full */
__u64 marks_without_kill = 0;	/* mark_victim of a task not sent SIGKILL: an exiting task */

struct sigkill {
	__u64 task;	/* the task sent SIGKILL */
	__u64 ts_ns;	/* when */
};

/* Sending thread id -> the last SIGKILL it sent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct sigkill);
} sigkill_sent SEC(".maps");

struct control_seen {
	__u64 addr;	/* the struct oom_control */
	__u64 chosen;	/* its chosen task when found */
};

/* Killer thread id -> the oom_control found for its last kill. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct control_seen);
} controls SEC(".maps");

struct scratch {
	__u64 number;	/* see as_number(): mark_victim's */
	__u64 signal_number;	/* signal_generate's (it may interrupt mark_victim's program) */
	__u64 words[OOM_SCAN_WORDS];	/* a chunk of stack (find_control) */
	char path[OOM_PATH_LEN];	/* a cgroup path (scratch_memcg_path) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

static __always_inline struct scratch *scratch_area(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch, &zero);
}

/* A pointer as a plain number: stored to and reloaded from this CPU's
 * scratch slot, the verifier forgets it was a pointer (needs CAP_PERFMON, as
 * tracing does). Everything below then reads through probe reads, the same
 * for a task the tracepoint passed and one found in a map. */
static __always_inline __u64 as_number(volatile __u64 *slot, const void *ptr)
{
	*slot = (__u64)ptr;
	return *slot;
}

static __always_inline __u64 read_u64(__u64 addr)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const void *)addr);
	return v;
}

/* The memory cgroup of a task (0 without CONFIG_MEMCG). */
static __always_inline __u64 task_memcg(__u64 task)
{
	struct css_set *cset;
	__u64 css;
	int id;

	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return 0;
	id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	cset = BPF_CORE_READ((struct task_struct *)task, cgroups);
	if (!cset)
		return 0;
	css = read_u64((__u64)cset + bpf_core_field_offset(struct css_set, subsys) + id * sizeof(void *));
	return css ? css - bpf_core_field_offset(struct mem_cgroup, css) : 0;
}

static __always_inline __u64 parent_memcg(__u64 memcg)
{
	struct cgroup_subsys_state *parent = BPF_CORE_READ((struct mem_cgroup *)memcg, css.parent);

	return parent ? (__u64)parent - bpf_core_field_offset(struct mem_cgroup, css) : 0;
}

/* Whether `ancestor` is `memcg` or one of its ancestors. */
static __always_inline bool memcg_within(__u64 memcg, __u64 ancestor)
{
	int i;

	for (i = 0; i < OOM_MAX_DEPTH && memcg; i++) {
		if (memcg == ancestor)
			return true;
		memcg = parent_memcg(memcg);
	}
	return false;
}

/* Path of a memory cgroup from its hierarchy's root ("/" for the root),
 * into this CPU's scratch path. Returns 1 if it was cut, -1 on no scratch.
 * A global function: the verifier checks it once. */
__noinline int scratch_memcg_path(__u64 memcg)
{
	struct kernfs_node *kn = BPF_CORE_READ((struct mem_cgroup *)memcg, css.cgroup, kn);
	struct kernfs_node *chain[OOM_MAX_DEPTH];
	struct kernfs_node *parent;
	struct scratch *s = scratch_area();
	const char *name;
	char *buf;
	int cut = 0;
	__u32 pos = 0;
	long n;
	int depth, i;

	if (!s)
		return -1;
	buf = s->path;
	for (depth = 0; depth < OOM_MAX_DEPTH && kn; depth++) {
		parent = oom_kernfs_parent(kn);
		if (!parent)
			break;
		chain[depth] = kn;
		kn = parent;
	}
	if (depth == OOM_MAX_DEPTH)
		cut = 1;
	/* One way through each iteration (a cut ends the loop), so that the
	 * verifier's work grows linearly with the depth. */
	for (i = depth - 1; i >= 0 && i < OOM_MAX_DEPTH; i--) {
		if (pos >= OOM_PATH_LEN / 2 - 1) {
			cut = 1;
			break;
		}
		/* Keep the masks: they are what bound the writes for the verifier. */
		barrier_var(pos);
		buf[pos & (OOM_PATH_LEN / 2 - 1)] = '/';
		pos++;
		name = BPF_CORE_READ(chain[i], name);
		barrier_var(pos);
		n = bpf_probe_read_kernel_str(buf + (pos & (OOM_PATH_LEN / 2 - 1)), OOM_PATH_LEN / 2, name);
		pos += n - 1; /* n counts the NUL */
	}
	if (pos >= OOM_PATH_LEN / 2 - 1)
		cut = 1;
	if (!pos) {
		buf[0] = '/';
		pos = 1;
	}
	barrier_var(pos);
	buf[pos & (OOM_PATH_LEN - 1)] = 0;
	return cut;
}

/* Path of a memory cgroup into dst (OOM_PATH_LEN bytes): true if cut. */
static __always_inline bool memcg_path(struct scratch *s, __u64 memcg, char *dst)
{
	int cut = scratch_memcg_path(memcg);

	if (cut < 0 || bpf_probe_read_kernel(dst, OOM_PATH_LEN, s->path))
		dst[0] = 0;
	return cut > 0;
}

/* Usage and limit (pages) of a memory cgroup's memory page counter. */
static __always_inline void memcg_counter(__u64 memcg, __u64 *usage, __u64 *limit, __u64 *id)
{
	struct mem_cgroup *m = (struct mem_cgroup *)memcg;
	long count = BPF_CORE_READ(m, memory.usage.counter);

	*usage = count < 0 ? 0 : count;
	*limit = BPF_CORE_READ(m, memory.max);
	*id = BPF_CORE_READ(m, css.cgroup, kn, id);
}

/* Whether a struct oom_control at `addr` is consistent with a kill of a
 * task in memory cgroup `victim_memcg`. A global function: the verifier
 * checks it once, not once per stack word the search loop looks at. */
__noinline int oom_control_fits(__u64 addr, __u64 victim_memcg)
{
	struct oom_control *oc = (struct oom_control *)addr;
	__u64 memcg = (__u64)BPF_CORE_READ(oc, memcg);
	__u32 constraint = BPF_CORE_READ(oc, constraint);
	int order = BPF_CORE_READ(oc, order);

	if (order < -1 || order > OOM_MAX_ORDER || !BPF_CORE_READ(oc, totalpages))
		return 0;
	if (constraint == bpf_core_enum_value(enum oom_constraint, CONSTRAINT_MEMCG))
		return memcg && victim_memcg && memcg_within(victim_memcg, memcg);
	if (constraint == bpf_core_enum_value(enum oom_constraint, CONSTRAINT_NONE) ||
	    constraint == bpf_core_enum_value(enum oom_constraint, CONSTRAINT_CPUSET) ||
	    constraint == bpf_core_enum_value(enum oom_constraint, CONSTRAINT_MEMORY_POLICY))
		return !memcg;
	return 0;
}

/* Address of the killer's struct oom_control whose `chosen` is a0 or a1,
 * searched upwards from `from` (the tracepoint's argument array on this
 * thread's stack); 0 if none fits. The search stops at the first unreadable
 * chunk (the guard page above a vmalloc'ed stack). A global function. */
__noinline __u64 find_control(__u64 from, __u64 a0, __u64 a1, __u64 victim_memcg)
{
	__u64 base = from & ~(__u64)(OOM_SCAN_CHUNK - 1);
	__u64 chosen_off = bpf_core_field_offset(struct oom_control, chosen);
	struct scratch *s = scratch_area();
	__u64 addr, w;
	int c, i;

	if (!s)
		return 0;
	for (c = 0; c < OOM_SCAN_BYTES / OOM_SCAN_CHUNK; c++, base += OOM_SCAN_CHUNK) {
		if (bpf_probe_read_kernel(s->words, sizeof(s->words), (const void *)base))
			return 0;
		for (i = 0; i < OOM_SCAN_WORDS; i++) {
			w = s->words[i];
			if (!w || (w != a0 && w != a1))
				continue;
			addr = base + i * sizeof(__u64);
			if (addr < from + chosen_off)
				continue;
			if (oom_control_fits(addr - chosen_off, victim_memcg))
				return addr - chosen_off;
		}
	}
	return 0;
}

static __always_inline void fill_victim(struct oom_kill *e, __u64 victim)
{
	struct task_struct *t = (struct task_struct *)victim;
	struct mm_struct *mm = BPF_CORE_READ(t, mm);

	e->victim_tid = BPF_CORE_READ(t, pid);
	e->victim_pid = BPF_CORE_READ(t, tgid);
	BPF_CORE_READ_STR_INTO(&e->victim_comm, t, comm);
	e->victim_uid = BPF_CORE_READ(t, real_cred, uid.val);
	e->oom_score_adj = BPF_CORE_READ(t, signal, oom_score_adj);
	e->flags |= OOM_F_VICTIM_TASK;
	if (!mm)
		return;
	e->total_vm_pages = BPF_CORE_READ(mm, total_vm);
	e->rss_file_pages = oom_mm_counter(mm, mm_filepages);
	e->rss_anon_pages = oom_mm_counter(mm, mm_anonpages);
	e->rss_shmem_pages = oom_mm_counter(mm, mm_shmempages);
	e->swap_pages = oom_mm_counter(mm, mm_swapents);
	if (!oom_mm_pgtables_bytes(mm, &e->pgtables_bytes))
		e->flags |= OOM_F_NO_PGTABLES;
}

static __always_inline void fill_control(struct scratch *s, struct oom_kill *e, __u64 args, __u32 killer,
					 __u64 victim, __u64 victim_memcg)
{
	struct task_struct *t = (struct task_struct *)victim;
	__u64 leader = (__u64)BPF_CORE_READ(t, group_leader);
	struct control_seen seen = {}, *last;
	struct oom_control *oc;
	__u64 addr, chosen, memcg;

	addr = find_control(args, victim, leader, victim_memcg);
	if (addr) {
		seen.addr = addr;
		seen.chosen = (__u64)BPF_CORE_READ((struct oom_control *)addr, chosen);
		bpf_map_update_elem(&controls, &killer, &seen, BPF_ANY);
	} else {
		/* A memory.oom.group member killed after the chosen victim: the
		 * same oom_control, if it is still live and unchanged. */
		last = bpf_map_lookup_elem(&controls, &killer);
		if (!last)
			return;
		addr = last->addr;
		chosen = last->chosen;
		if (addr < args || (__u64)BPF_CORE_READ((struct oom_control *)addr, chosen) != chosen ||
		    !oom_control_fits(addr, victim_memcg))
			return;
	}
	oc = (struct oom_control *)addr;
	e->flags |= OOM_F_CONTROL;
	e->gfp = BPF_CORE_READ(oc, gfp_mask);
	e->order = BPF_CORE_READ(oc, order);
	e->constraint = BPF_CORE_READ(oc, constraint);
	e->totalpages = BPF_CORE_READ(oc, totalpages);
	memcg = (__u64)BPF_CORE_READ(oc, memcg);
	if (!memcg)
		return;
	e->flags |= OOM_F_OOM_MEMCG;
	memcg_counter(memcg, &e->oom_cgroup_usage_pages, &e->oom_cgroup_limit_pages, &e->oom_cgroup_id);
	if (memcg_path(s, memcg, e->oom_cgroup))
		e->flags |= OOM_F_OOM_PATH_CUT;
}

/* Numbers zeroed, strings empty (whole-record memset is too large to inline). */
static __always_inline void zero_record(struct oom_kill *e)
{
	const __u32 numbers = __builtin_offsetof(struct oom_kill, victim_comm);

	__builtin_memset(e, 0, numbers / 2);
	__builtin_memset((char *)e + numbers / 2, 0, numbers - numbers / 2);
	e->victim_comm[0] = 0;
	e->trigger_comm[0] = 0;
	e->cgroup[0] = 0;
	e->oom_cgroup[0] = 0;
}

/* victim: the marked task, or 0 when only its thread id is known. */
static __always_inline int on_mark_victim(void *ctx, __u32 victim_tid, const void *victim_task)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 killer = (__u32)pid_tgid;
	struct scratch *s = scratch_area();
	__u64 target = 0, victim, memcg, args, now = bpf_ktime_get_ns();
	struct sigkill *sent;
	struct oom_kill *e;

	if (!s)
		return 0;
	sent = bpf_map_lookup_elem(&sigkill_sent, &killer);
	if (sent) {
		if (now - sent->ts_ns < OOM_SIGKILL_MAX_AGE_NS)
			target = sent->task;
		bpf_map_delete_elem(&sigkill_sent, &killer);
	}
	victim = victim_task ? as_number(&s->number, victim_task) : 0;
	if (!target || (victim ? target != victim : BPF_CORE_READ((struct task_struct *)target, pid) != victim_tid)) {
		__sync_fetch_and_add(&marks_without_kill, 1);
		return 0;
	}
	victim = target;
	args = as_number(&s->number, ctx);

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&events_dropped, 1);
		return 0;
	}
	zero_record(e);
	e->ts_ns = now;
	e->trigger_pid = pid_tgid >> 32;
	e->trigger_tid = killer;
	bpf_get_current_comm(e->trigger_comm, sizeof(e->trigger_comm));
	fill_victim(e, victim);
	memcg = task_memcg(victim);
	if (memcg) {
		e->flags |= OOM_F_MEMCG;
		memcg_counter(memcg, &e->cgroup_usage_pages, &e->cgroup_limit_pages, &e->cgroup_id);
		if (memcg_path(s, memcg, e->cgroup))
			e->flags |= OOM_F_PATH_CUT;
	}
	fill_control(s, e, args, killer, victim, memcg);
	/* Kills are rare and wanted at once: wake the reader. */
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/signal_generate")
int BPF_PROG(oom_signal_generate, int sig, struct kernel_siginfo *info, struct task_struct *task)
{
	struct sigkill sent;
	struct scratch *s;
	__u32 tid;

	if (sig != SIGKILL)
		return 0;
	s = scratch_area();
	if (!s)
		return 0;
	tid = (__u32)bpf_get_current_pid_tgid();
	sent.task = as_number(&s->signal_number, task);
	sent.ts_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&sigkill_sent, &tid, &sent, BPF_ANY);
	return 0;
}

/* oom:mark_victim(struct task_struct *task, uid_t uid): Linux 6.8+ and
 * backports (Debian's 6.1 has it). */
SEC("tp_btf/mark_victim")
int BPF_PROG(oom_mark_victim, struct task_struct *task)
{
	if (victim_from_pid)
		return on_mark_victim(ctx, task->pid, 0);
	return on_mark_victim(ctx, task->pid, task);
}

/* oom:mark_victim(int pid): older kernels. */
SEC("tp_btf/mark_victim")
int BPF_PROG(oom_mark_victim_pid, int pid)
{
	return on_mark_victim(ctx, pid, 0);
}

char LICENSE[] SEC("license") = "GPL";
