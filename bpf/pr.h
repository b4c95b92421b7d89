/* Records of the page reclaim report (pr), shared by pr.bpf.c and Python. */
#ifndef MEMWATCHER_PR_H
#define MEMWATCHER_PR_H

/* log2 latency buckets: slot s counts durations in [2^s, 2^(s+1)) ns (slot 0: 0-1 ns);
 * the last slot also takes everything longer (2^39 ns is about 9 minutes). */
#define PR_HIST_SLOTS 40

/* Reclaim invocation kinds (histogram keys, in-flight starts, event reclaimer). */
#define PR_KIND_DIRECT 0
#define PR_KIND_MEMCG 1
/* Event reclaimer when the task is in neither: kswapd, proactive reclaim, ... */
#define PR_KIND_OTHER 2

/* Cumulative counters of one LRU type (anon or file) of one node. The first
 * group sums struct reclaim_stat of every mm_vmscan_lru_shrink_inactive event,
 * the second mm_vmscan_lru_shrink_active; *_shrinks count events. */
struct pr_lru {
	__u64 inactive_shrinks;
	__u64 scanned_pages;
	__u64 reclaimed_pages;
	__u64 dirty_pages;
	__u64 unqueued_dirty_pages;
	__u64 congested_pages;
	__u64 writeback_pages;
	__u64 immediate_pages;
	__u64 pageout_pages;
	__u64 activated_pages;
	__u64 ref_keep_pages;
	__u64 unmap_fail_pages;
	__u64 active_shrinks;
	__u64 active_taken_pages;
	__u64 active_kept_pages;
	__u64 deactivated_pages;
	__u64 referenced_pages;
};

/* Per-CPU value of the `nodes` array, indexed by node id. lru[0] is anon, lru[1] file. */
struct pr_node {
	struct pr_lru lru[2];
	__u64 kswapd_wakeups;
	__u64 kswapd_sleeps;
};

/* Per-CPU value of the one-entry `totals` array: reclaim invocations (cumulative). */
struct pr_totals {
	__u64 direct_reclaims;
	__u64 direct_reclaim_ns;
	__u64 direct_reclaimed_pages;
	__u64 memcg_reclaims;
	__u64 memcg_reclaim_ns;
	__u64 memcg_reclaimed_pages;
	/* events of a node id beyond the `nodes` array (never expected) */
	__u64 bad_node;
	/* end events without a begin (attached mid-reclaim) or starts map full */
	__u64 unmatched_ends;
	__u64 starts_full;
	__u64 hist_full;
	__u64 cgroup_hist_full;
	/* shrink_node variant: fexit without a recorded entry (attached mid-call),
	 * sc_starts full, a priority/order/reclaim_idx beyond the slots of pr_sc_* */
	__u64 sc_unmatched;
	__u64 sc_starts_full;
	__u64 sc_out_of_range;
};

/* Key of `starts` (id = thread id) and `hists` (id = process id). */
struct pr_hist_key {
	__u32 id;
	__u32 kind;
};

/* Cumulative reclaim latency (stalls) of one kind, updated atomically. */
struct pr_latency {
	__u64 count;
	__u64 total_ns;
	__u64 reclaimed_pages;
	__u64 slots[PR_HIST_SLOTS];
};

/* `hists` value: the latency of one process and kind. */
struct pr_hist {
	struct pr_latency latency;
	char comm[16];
};

/* Key of `cgroup_hists`: the stalled task's memory cgroup (its kernfs node id,
 * which is the inode number of the cgroup's directory) and the reclaim kind. */
struct pr_cgroup_key {
	__u64 cgroup_id;
	__u32 kind;
	__u32 pad;
};

/* One mm_vmscan_lru_shrink_inactive event (ring buffer, with --events). */
struct pr_event {
	__u64 ts_ns;
	__u64 scanned_pages;
	__u64 reclaimed_pages;
	__u32 pid;
	__u32 tid;
	__s32 nid;
	__s32 priority;
	__u32 file;
	__u32 reclaimer;
	__u32 dirty_pages;
	__u32 unqueued_dirty_pages;
	__u32 congested_pages;
	__u32 writeback_pages;
	__u32 immediate_pages;
	__u32 pageout_pages;
	__u32 activate_anon_pages;
	__u32 activate_file_pages;
	__u32 ref_keep_pages;
	__u32 unmap_fail_pages;
	char comm[16];
};

/* ---- shrink_node() fentry/fexit variant (optional: kernels allowing fentry) ---- */

/* Who called shrink_node(): kswapd (current is pgdat->kswapd), cgroup limit
 * reclaim (sc->target_mem_cgroup set), proactive reclaim (sc->proactive, the
 * memory.reclaim file), else direct reclaim (including node reclaim). */
#define PR_SC_KSWAPD 0
#define PR_SC_DIRECT 1
#define PR_SC_MEMCG 2
#define PR_SC_PROACTIVE 3
#define PR_SC_KINDS 4
/* Bounds of the per-kind arrays, not kernel values: DEF_PRIORITY and the
 * largest order are #defines absent from BTF. Values outside are counted in
 * pr_totals.sc_out_of_range, never folded into a slot. */
#define PR_PRIO_SLOTS 16
#define PR_ORDER_SLOTS 16
#define PR_ZONE_SLOTS 8

/* Per-CPU value of `sc_prios`, key kind * PR_PRIO_SLOTS + priority (sc->priority
 * at entry): cumulative shrink_node() calls and their effect, in pages and ns. */
struct pr_sc_prio {
	__u64 calls;
	/* sums of the per-call deltas of sc->nr_scanned and sc->nr_reclaimed */
	__u64 scanned_pages;
	__u64 reclaimed_pages;
	/* sum of sc->nr_to_reclaim (the reclaim's goal) at entry */
	__u64 to_reclaim_pages;
	/* calls returning with sc->nr_reclaimed >= sc->nr_to_reclaim */
	__u64 goal_met_calls;
	__u64 duration_ns;
};

/* Per-CPU value of `sc_kinds`, key kind: calls per sc->order and per
 * sc->reclaim_idx (the highest zone index the reclaim may free from). */
struct pr_sc_kind {
	__u64 orders[PR_ORDER_SLOTS];
	__u64 zones[PR_ZONE_SLOTS];
};

/* `sc_starts` value, key thread id: scan_control at shrink_node() entry. */
struct pr_sc_start {
	__u64 ts_ns;
	__u64 scanned_pages;
	__u64 reclaimed_pages;
	__u64 to_reclaim_pages;
	__u32 kind;
	__s32 priority;
	__s32 order;
	__s32 reclaim_idx;
};

#endif
