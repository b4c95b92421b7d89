// SPDX-License-Identifier: GPL-2.0
/* Page reclaim (pr): aggregates the vmscan tracepoints per node and LRU type
 * in per-CPU counters, times direct and memcg reclaim per process and per
 * memory cgroup in log2 histograms, and optionally streams each
 * shrink_inactive event.
 *
 * Every hook has a tp_btf and a raw_tp program with the same body; user space
 * loads one set (tp_btf where the kernel allows it). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "core_fixes.bpf.h"
#include "records.bpf.h"
#include "pr.h"

/* Stream shrink_inactive events to the `events` ring buffer. */
const volatile bool emit_events = false;

__u64 events_submitted = 0;
__u64 events_dropped = 0;

/* max_entries is set by user space to the number of possible nodes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pr_node);
} nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pr_totals);
} totals SEC(".maps");

/* In-flight direct/memcg reclaim start times, by thread and kind. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct pr_hist_key);
	__type(value, __u64);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct pr_hist_key);
	__type(value, struct pr_hist);
} hists SEC(".maps");

/* The same stalls by memory cgroup: whose limit or whose share of a short
 * system made its tasks wait. max_entries is set by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct pr_cgroup_key);
	__type(value, struct pr_latency);
} cgroup_hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} events SEC(".maps");

EXPORT_RECORD(pr_event);

static __always_inline struct pr_totals *get_totals(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&totals, &zero);
}

static __always_inline struct pr_node *get_node(int nid)
{
	struct pr_totals *t;
	__u32 key = nid;
	struct pr_node *n = bpf_map_lookup_elem(&nodes, &key);

	if (!n && (t = get_totals()))
		t->bad_node++;
	return n;
}

/* floor(log2(v)), 0 for v <= 1. */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xffffffffULL) << 5;
	v >>= r;
	shift = (v > 0xffff) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xff) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xf) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

/* Which reclaim the current thread is in (for event records). */
static __always_inline __u32 current_reclaimer(__u32 tid)
{
	struct pr_hist_key key = { .id = tid, .kind = PR_KIND_MEMCG };

	if (bpf_map_lookup_elem(&starts, &key))
		return PR_KIND_MEMCG;
	key.kind = PR_KIND_DIRECT;
	if (bpf_map_lookup_elem(&starts, &key))
		return PR_KIND_DIRECT;
	return PR_KIND_OTHER;
}

static __always_inline void emit_event(int nid, __u64 scanned, __u64 reclaimed, int priority, int file,
				       const struct pr_reclaim_stat *rs)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pr_event *e;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&events_dropped, 1);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->scanned_pages = scanned;
	e->reclaimed_pages = reclaimed;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->nid = nid;
	e->priority = priority;
	e->file = file;
	e->reclaimer = current_reclaimer((__u32)pid_tgid);
	e->dirty_pages = rs->dirty;
	e->unqueued_dirty_pages = rs->unqueued_dirty;
	e->congested_pages = rs->congested;
	e->writeback_pages = rs->writeback;
	e->immediate_pages = rs->immediate;
	e->pageout_pages = rs->pageout;
	e->activate_anon_pages = rs->activate[0];
	e->activate_file_pages = rs->activate[1];
	e->ref_keep_pages = rs->ref_keep;
	e->unmap_fail_pages = rs->unmap_fail;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	__sync_fetch_and_add(&events_submitted, 1);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void on_shrink_inactive(int nid, __u64 scanned, __u64 reclaimed, const void *stat,
					       int priority, int file)
{
	struct pr_reclaim_stat rs;
	struct pr_node *n;
	struct pr_lru *l;

	/* MGLRU passes an LRU list index (LRU_INACTIVE_FILE == 2), the classic
	 * LRU a 0/1 flag: any non-zero value means the file LRU. */
	file = file != 0;
	pr_read_reclaim_stat(stat, file, &rs);
	n = get_node(nid);
	if (n) {
		l = &n->lru[file];
		l->inactive_shrinks++;
		l->scanned_pages += scanned;
		l->reclaimed_pages += reclaimed;
		l->dirty_pages += rs.dirty;
		l->unqueued_dirty_pages += rs.unqueued_dirty;
		l->congested_pages += rs.congested;
		l->writeback_pages += rs.writeback;
		l->immediate_pages += rs.immediate;
		l->pageout_pages += rs.pageout;
		l->activated_pages += rs.activate[0] + rs.activate[1];
		l->ref_keep_pages += rs.ref_keep;
		l->unmap_fail_pages += rs.unmap_fail;
	}
	if (emit_events)
		emit_event(nid, scanned, reclaimed, priority, file, &rs);
}

static __always_inline void on_shrink_active(int nid, __u64 taken, __u64 kept, __u64 deactivated,
					     __u64 referenced, int file)
{
	struct pr_node *n = get_node(nid);
	struct pr_lru *l;

	if (!n)
		return;
	l = &n->lru[file != 0];
	l->active_shrinks++;
	l->active_taken_pages += taken;
	l->active_kept_pages += kept;
	l->deactivated_pages += deactivated;
	l->referenced_pages += referenced;
}

static __always_inline void on_kswapd(int nid, bool wake)
{
	struct pr_node *n = get_node(nid);

	if (!n)
		return;
	if (wake)
		n->kswapd_wakeups++;
	else
		n->kswapd_sleeps++;
}

static __always_inline void on_reclaim_begin(__u32 kind)
{
	struct pr_hist_key key = { .id = (__u32)bpf_get_current_pid_tgid(), .kind = kind };
	__u64 now = bpf_ktime_get_ns();
	struct pr_totals *t;

	if (bpf_map_update_elem(&starts, &key, &now, BPF_ANY) && (t = get_totals()))
		t->starts_full++;
}

/* The current task's memory cgroup as its kernfs id (0 without a memory
 * controller). The controller's index in css_set.subsys comes from BTF. */
static __always_inline __u64 current_memcg_id(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct cgroup_subsys_state *css;
	int memory;

	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return 0;
	memory = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	css = BPF_CORE_READ(task, cgroups, subsys[memory]);
	return BPF_CORE_READ(css, cgroup, kn, id);
}

static __always_inline void add_latency(struct pr_latency *l, __u64 delta_ns, __u64 reclaimed)
{
	__u64 slot = log2_u64(delta_ns);

	__sync_fetch_and_add(&l->count, 1);
	__sync_fetch_and_add(&l->total_ns, delta_ns);
	__sync_fetch_and_add(&l->reclaimed_pages, reclaimed);
	/* A 64-bit index bounded right before use: older verifiers (6.1) lose
	 * the bound of a spilled 32-bit index through its zero-extension. */
	barrier_var(slot);
	if (slot >= PR_HIST_SLOTS)
		slot = PR_HIST_SLOTS - 1;
	__sync_fetch_and_add(&l->slots[slot], 1);
}

static __always_inline void on_reclaim_end(__u32 kind, __u64 reclaimed)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pr_hist_key key = { .id = (__u32)pid_tgid, .kind = kind };
	struct pr_cgroup_key cg_key = { .cgroup_id = current_memcg_id(), .kind = kind };
	static const struct pr_latency zero_latency;
	static const struct pr_hist zero_hist;
	struct pr_totals *t = get_totals();
	struct pr_latency *l;
	struct pr_hist *h;
	__u64 *start, delta_ns;

	if (!t)
		return;
	start = bpf_map_lookup_elem(&starts, &key);
	if (!start) {
		t->unmatched_ends++;
		return;
	}
	delta_ns = bpf_ktime_get_ns() - *start;
	bpf_map_delete_elem(&starts, &key);
	if (kind == PR_KIND_DIRECT) {
		t->direct_reclaims++;
		t->direct_reclaim_ns += delta_ns;
		t->direct_reclaimed_pages += reclaimed;
	} else {
		t->memcg_reclaims++;
		t->memcg_reclaim_ns += delta_ns;
		t->memcg_reclaimed_pages += reclaimed;
	}

	l = bpf_map_lookup_elem(&cgroup_hists, &cg_key);
	if (!l) {
		bpf_map_update_elem(&cgroup_hists, &cg_key, &zero_latency, BPF_NOEXIST);
		l = bpf_map_lookup_elem(&cgroup_hists, &cg_key);
	}
	if (l)
		add_latency(l, delta_ns, reclaimed);
	else
		t->cgroup_hist_full++;

	key.id = pid_tgid >> 32;
	h = bpf_map_lookup_elem(&hists, &key);
	if (!h) {
		bpf_map_update_elem(&hists, &key, &zero_hist, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hists, &key);
		if (!h) {
			t->hist_full++;
			return;
		}
		bpf_get_current_comm(h->comm, sizeof(h->comm));
	}
	add_latency(&h->latency, delta_ns, reclaimed);
}

/* Program bodies shared by the tp_btf and raw_tp variants. */
#define PR_PROGRAMS(kind)                                                                                    \
	SEC(#kind "/mm_vmscan_lru_shrink_inactive")                                                          \
	int BPF_PROG(kind##_shrink_inactive, int nid, unsigned long nr_scanned, unsigned long nr_reclaimed,  \
		     struct reclaim_stat *stat, int priority, int file)                                      \
	{                                                                                                    \
		on_shrink_inactive(nid, nr_scanned, nr_reclaimed, stat, priority, file);                     \
		return 0;                                                                                    \
	}                                                                                                    \
	SEC(#kind "/mm_vmscan_lru_shrink_active")                                                            \
	int BPF_PROG(kind##_shrink_active, int nid, unsigned long nr_taken, unsigned long nr_active,         \
		     unsigned long nr_deactivated, unsigned long nr_referenced, int priority, int file)      \
	{                                                                                                    \
		on_shrink_active(nid, nr_taken, nr_active, nr_deactivated, nr_referenced, file);             \
		return 0;                                                                                    \
	}                                                                                                    \
	SEC(#kind "/mm_vmscan_kswapd_wake")                                                                  \
	int BPF_PROG(kind##_kswapd_wake, int nid)                                                            \
	{                                                                                                    \
		on_kswapd(nid, true);                                                                        \
		return 0;                                                                                    \
	}                                                                                                    \
	SEC(#kind "/mm_vmscan_kswapd_sleep")                                                                 \
	int BPF_PROG(kind##_kswapd_sleep, int nid)                                                           \
	{                                                                                                    \
		on_kswapd(nid, false);                                                                       \
		return 0;                                                                                    \
	}                                                                                                    \
	SEC(#kind "/mm_vmscan_direct_reclaim_begin")                                                         \
	int BPF_PROG(kind##_direct_begin)                                                                    \
	{                                                                                                    \
		on_reclaim_begin(PR_KIND_DIRECT);                                                            \
		return 0;                                                                                    \
	}                                                                                                    \
	SEC(#kind "/mm_vmscan_direct_reclaim_end")                                                           \
	int BPF_PROG(kind##_direct_end, unsigned long nr_reclaimed)                                          \
	{                                                                                                    \
		on_reclaim_end(PR_KIND_DIRECT, nr_reclaimed);                                                \
		return 0;                                                                                    \
	}                                                                                                    \
	SEC(#kind "/mm_vmscan_memcg_reclaim_begin")                                                          \
	int BPF_PROG(kind##_memcg_begin)                                                                     \
	{                                                                                                    \
		on_reclaim_begin(PR_KIND_MEMCG);                                                             \
		return 0;                                                                                    \
	}                                                                                                    \
	SEC(#kind "/mm_vmscan_memcg_reclaim_end")                                                            \
	int BPF_PROG(kind##_memcg_end, unsigned long nr_reclaimed)                                           \
	{                                                                                                    \
		on_reclaim_end(PR_KIND_MEMCG, nr_reclaimed);                                                 \
		return 0;                                                                                    \
	}

PR_PROGRAMS(tp_btf)
PR_PROGRAMS(raw_tp)

/* ---- shrink_node(): scan_control per call (fentry/fexit, optional) ----
 * shrink_node() reclaims from one node for every kind of reclaim (kswapd,
 * direct, cgroup limit, proactive). Its scan_control says how hard the kernel
 * is trying (priority counts down from DEF_PRIORITY as passes fail) and for
 * what (order, reclaim_idx, nr_to_reclaim); the growth of sc->nr_scanned and
 * sc->nr_reclaimed across one call is that call's work and yield. */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct pr_sc_start);
} sc_starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PR_SC_KINDS * PR_PRIO_SLOTS);
	__type(key, __u32);
	__type(value, struct pr_sc_prio);
} sc_prios SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PR_SC_KINDS);
	__type(key, __u32);
	__type(value, struct pr_sc_kind);
} sc_kinds SEC(".maps");

static __always_inline __u32 sc_kind(const void *pgdat, const struct pr_scan_control *sc)
{
	if (sc->proactive)
		return PR_SC_PROACTIVE;
	if (sc->memcg)
		return PR_SC_MEMCG;
	if (pr_current_is_kswapd(pgdat))
		return PR_SC_KSWAPD;
	return PR_SC_DIRECT;
}

static __always_inline void on_shrink_node_entry(const void *pgdat, const void *scan_control)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pr_sc_start st = {};
	struct pr_scan_control sc;
	struct pr_totals *t;

	pr_read_scan_control(scan_control, &sc);
	st.kind = sc_kind(pgdat, &sc);
	st.priority = sc.priority;
	st.order = sc.order;
	st.reclaim_idx = sc.reclaim_idx;
	st.to_reclaim_pages = sc.to_reclaim_pages;
	st.scanned_pages = sc.scanned_pages;
	st.reclaimed_pages = sc.reclaimed_pages;
	st.ts_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&sc_starts, &tid, &st, BPF_ANY) && (t = get_totals()))
		t->sc_starts_full++;
}

static __always_inline void on_shrink_node_exit(const void *scan_control)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pr_totals *t = get_totals();
	struct pr_sc_start st, *found;
	struct pr_scan_control sc;
	struct pr_sc_prio *p;
	struct pr_sc_kind *k;
	__u64 slot;
	__u32 key;

	if (!t)
		return;
	found = bpf_map_lookup_elem(&sc_starts, &tid);
	if (!found) {
		t->sc_unmatched++;
		return;
	}
	st = *found;
	bpf_map_delete_elem(&sc_starts, &tid);
	pr_read_scan_control(scan_control, &sc);
	if (st.kind >= PR_SC_KINDS || st.priority < 0 || st.priority >= PR_PRIO_SLOTS) {
		t->sc_out_of_range++;
		return;
	}
	key = st.kind * PR_PRIO_SLOTS + st.priority;
	p = bpf_map_lookup_elem(&sc_prios, &key);
	k = bpf_map_lookup_elem(&sc_kinds, &st.kind);
	if (!p || !k)
		return;
	p->calls++;
	p->scanned_pages += sc.scanned_pages - st.scanned_pages;
	p->reclaimed_pages += sc.reclaimed_pages - st.reclaimed_pages;
	p->to_reclaim_pages += st.to_reclaim_pages;
	p->goal_met_calls += sc.reclaimed_pages >= st.to_reclaim_pages;
	p->duration_ns += bpf_ktime_get_ns() - st.ts_ns;
	/* 64-bit indices bounded right before use (see on_reclaim_end). */
	slot = st.order;
	barrier_var(slot);
	if (slot < PR_ORDER_SLOTS)
		k->orders[slot]++;
	else
		t->sc_out_of_range++;
	slot = st.reclaim_idx;
	barrier_var(slot);
	if (slot < PR_ZONE_SLOTS)
		k->zones[slot]++;
	else
		t->sc_out_of_range++;
}

SEC("fentry/shrink_node")
int BPF_PROG(fentry_shrink_node, void *pgdat, void *sc)
{
	on_shrink_node_entry(pgdat, sc);
	return 0;
}

SEC("fexit/shrink_node")
int BPF_PROG(fexit_shrink_node, void *pgdat, void *sc)
{
	on_shrink_node_exit(sc);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
