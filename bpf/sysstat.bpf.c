// SPDX-License-Identifier: GPL-2.0
/* sysstat: snapshots of every NUMA node's vm_stat counters (the numbers
 * behind /proc/meminfo and /proc/vmstat), taken on page allocations at most
 * once per min_period_ns, or on demand when user space test-runs
 * snapshot_now.
 *
 * The global vm_node_stat / vm_zone_stat / node_data arrays are not
 * reachable through __ksym on every kernel: kernel BTF describes only
 * per-CPU variables (so a typed ksym fails), and without
 * CONFIG_KALLSYMS_ALL kallsyms lists no data symbols (so a typeless ksym
 * fails too; both are the case on the 6.18 development kernel). Instead the
 * node data (struct pglist_data) is found from the current task: its memory
 * cgroup -> the root memory cgroup -> nodeinfo[nid]->lruvec.pgdat. Every
 * node's vm_stat plus the vm_stat of each of its zones gives exactly the
 * global sums, which the kernel folds into node, zone and global counters
 * together. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "core_fixes.bpf.h"
#include "sysstat.h"

/* Loop and buffer bounds; the kernel's own counts come from its BTF. */
#define NODE_ITEMS_MAX 128
#define ZONE_ITEMS_MAX 32
#define ZONES_MAX 8
#define NODES_MAX 64

/* Allocation events take at most one snapshot per this many ns. */
const volatile __u64 min_period_ns = 10000000;
/* Node ids 0..nr_nodes-1 are visited (nr_node_ids; also `nodes` size). */
const volatile __u32 nr_nodes = 1;

__u64 last_snapshot_ns = 0;
__u64 snapshots = 0;
__u64 forced_snapshots = 0;
/* Snapshots that could not reach the node data (no memory cgroup). */
__u64 walk_failures = 0;
/* Nodes written by the latest snapshot. */
__u32 nodes_seen = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sysstat_node);
} nodes SEC(".maps");

/* One snapshot is assembled here, then copied into `nodes` in one update,
 * so that a reader never sees a half-summed counter. */
struct sysstat_scratch {
	__s64 node[NODE_ITEMS_MAX];
	__s64 zone[ZONE_ITEMS_MAX];
	__s64 zone_sum[ZONE_ITEMS_MAX];
	__s64 managed;
	__s64 wmark_low;
	struct sysstat_node out;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sysstat_scratch);
} scratch SEC(".maps");

static __always_inline void *read_ptr(const char *addr)
{
	void *p = NULL;

	bpf_probe_read_kernel(&p, sizeof(p), addr);
	return p;
}

/* The root memory cgroup: the current task's memory css -> the root cgroup
 * of that hierarchy (v1 or v2) -> the root's memory css. */
static __always_inline char *root_memcg(void)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct cgroup_root *root;
	char *cset, *css;
	__u32 id;

	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return NULL;
	id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	cset = (char *)BPF_CORE_READ(task, cgroups);
	if (!cset)
		return NULL;
	css = read_ptr(cset + bpf_core_field_offset(struct css_set, subsys) + id * sizeof(void *));
	if (!css)
		return NULL;
	root = BPF_CORE_READ((struct cgroup_subsys_state *)css, cgroup, root);
	if (!root)
		return NULL;
	css = read_ptr((char *)root + bpf_core_field_offset(struct cgroup_root, cgrp) +
		       bpf_core_field_offset(struct cgroup, subsys) + id * sizeof(void *));
	if (!css)
		return NULL;
	return css - bpf_core_field_offset(struct mem_cgroup, css);
}

/* NODE_DATA(nid) as the root memcg's per-node LRU knows it (NULL if the
 * node has none: no memory there, or never used by the root memcg). */
static __always_inline char *node_pgdat(char *memcg, __u32 nid)
{
	char *pn = read_ptr(memcg + bpf_core_field_offset(struct mem_cgroup, nodeinfo) + nid * sizeof(void *));

	if (!pn)
		return NULL;
	return read_ptr(pn + bpf_core_field_offset(struct mem_cgroup_per_node, lruvec) +
			bpf_core_field_offset(struct lruvec, pgdat));
}

#define NODE_SLOT(slot, item)                                                                         \
	do {                                                                                          \
		if (bpf_core_enum_value_exists(enum node_stat_item, item)) {                          \
			out->value[slot] = sc->node[bpf_core_enum_value(enum node_stat_item, item) & \
						    (NODE_ITEMS_MAX - 1)];                            \
			out->present |= 1ULL << (slot);                                               \
		}                                                                                     \
	} while (0)

#define NODE_SLOT_OLD(slot, item)                                                                     \
	do {                                                                                          \
		if (bpf_core_enum_value_exists(enum node_stat_item___sysstat, item)) {                \
			out->value[slot] = sc->node[bpf_core_enum_value(enum node_stat_item___sysstat, \
									item) &                       \
						    (NODE_ITEMS_MAX - 1)];                            \
			out->present |= 1ULL << (slot);                                               \
		}                                                                                     \
	} while (0)

#define ZONE_SLOT(slot, enum_type, item)                                                              \
	do {                                                                                          \
		if (bpf_core_enum_value_exists(enum_type, item)) {                                    \
			out->value[slot] = sc->zone_sum[bpf_core_enum_value(enum_type, item) &       \
							(ZONE_ITEMS_MAX - 1)];                        \
			out->present |= 1ULL << (slot);                                               \
		}                                                                                     \
	} while (0)

static __always_inline void node_items(struct sysstat_scratch *sc)
{
	struct sysstat_node *out = &sc->out;

	NODE_SLOT(SYSSTAT_INACTIVE_ANON, NR_INACTIVE_ANON);
	NODE_SLOT(SYSSTAT_ACTIVE_ANON, NR_ACTIVE_ANON);
	NODE_SLOT(SYSSTAT_INACTIVE_FILE, NR_INACTIVE_FILE);
	NODE_SLOT(SYSSTAT_ACTIVE_FILE, NR_ACTIVE_FILE);
	NODE_SLOT(SYSSTAT_UNEVICTABLE, NR_UNEVICTABLE);
	NODE_SLOT(SYSSTAT_SLAB_RECLAIMABLE, NR_SLAB_RECLAIMABLE_B);
	NODE_SLOT_OLD(SYSSTAT_SLAB_RECLAIMABLE, NR_SLAB_RECLAIMABLE___sysstat);
	NODE_SLOT(SYSSTAT_SLAB_UNRECLAIMABLE, NR_SLAB_UNRECLAIMABLE_B);
	NODE_SLOT_OLD(SYSSTAT_SLAB_UNRECLAIMABLE, NR_SLAB_UNRECLAIMABLE___sysstat);
	NODE_SLOT(SYSSTAT_ANON_MAPPED, NR_ANON_MAPPED);
	NODE_SLOT(SYSSTAT_FILE_MAPPED, NR_FILE_MAPPED);
	NODE_SLOT(SYSSTAT_FILE_PAGES, NR_FILE_PAGES);
	NODE_SLOT(SYSSTAT_FILE_DIRTY, NR_FILE_DIRTY);
	NODE_SLOT(SYSSTAT_WRITEBACK, NR_WRITEBACK);
	NODE_SLOT_OLD(SYSSTAT_WRITEBACK_TEMP, NR_WRITEBACK_TEMP___sysstat);
	NODE_SLOT(SYSSTAT_SHMEM, NR_SHMEM);
	NODE_SLOT(SYSSTAT_SHMEM_THPS, NR_SHMEM_THPS);
	NODE_SLOT(SYSSTAT_SHMEM_PMDMAPPED, NR_SHMEM_PMDMAPPED);
	NODE_SLOT(SYSSTAT_FILE_THPS, NR_FILE_THPS);
	NODE_SLOT(SYSSTAT_FILE_PMDMAPPED, NR_FILE_PMDMAPPED);
	NODE_SLOT(SYSSTAT_ANON_THPS, NR_ANON_THPS);
	NODE_SLOT(SYSSTAT_KERNEL_MISC_RECLAIMABLE, NR_KERNEL_MISC_RECLAIMABLE);
	NODE_SLOT(SYSSTAT_KERNEL_STACK_KB, NR_KERNEL_STACK_KB);
	NODE_SLOT(SYSSTAT_PAGETABLE, NR_PAGETABLE);
	NODE_SLOT(SYSSTAT_SECONDARY_PAGETABLE, NR_SECONDARY_PAGETABLE);
	NODE_SLOT(SYSSTAT_SWAPCACHE, NR_SWAPCACHE);
}

static __always_inline void zone_items(struct sysstat_scratch *sc)
{
	struct sysstat_node *out = &sc->out;

	ZONE_SLOT(SYSSTAT_FREE_PAGES, enum zone_stat_item, NR_FREE_PAGES);
	ZONE_SLOT(SYSSTAT_MLOCK, enum zone_stat_item, NR_MLOCK);
	ZONE_SLOT(SYSSTAT_BOUNCE, enum zone_stat_item___sysstat, NR_BOUNCE___sysstat);
	ZONE_SLOT(SYSSTAT_FREE_CMA_PAGES, enum zone_stat_item, NR_FREE_CMA_PAGES);
}

/* The kernel's low_wmark_pages(zone): the low watermark raised by any boost. */
static __always_inline __s64 low_wmark_pages(char *zone)
{
	struct zone *z = (struct zone *)zone;
	unsigned long low = 0;

	bpf_probe_read_kernel(&low, sizeof(low), zone + bpf_core_field_offset(struct zone, _watermark) +
						       bpf_core_enum_value(enum zone_watermarks, WMARK_LOW) * sizeof(long));
	return low + zone_watermark_boost(z);
}

/* Copy one node's counters (its own and its zones' sums) into `nodes`;
 * returns 1 if written. Not inlined, and the counters are picked outside
 * any loop: otherwise clang hoists the index arithmetic of every slot out of
 * the loops, ahead of the bpf_core_enum_value_exists() test, and the
 * instruction libbpf poisons for a counter this kernel lacks is reached. */
static __noinline int snapshot_node(struct sysstat_scratch *sc, char *pgdat, __u64 now_ns, __u64 seq, __u32 trigger)
{
	struct sysstat_node *out;
	__u32 i, n, z, nzones, zone_size, nid;
	char *zone;

	if (!sc || !pgdat)
		return 0;
	out = &sc->out;
	n = bpf_core_enum_value(enum node_stat_item, NR_VM_NODE_STAT_ITEMS);
	if (n > NODE_ITEMS_MAX)
		n = NODE_ITEMS_MAX;
	if (bpf_probe_read_kernel(sc->node, n * sizeof(__s64), pgdat + bpf_core_field_offset(struct pglist_data, vm_stat)))
		return 0;

	nzones = bpf_core_enum_value(enum zone_type, __MAX_NR_ZONES);
	zone_size = bpf_core_type_size(struct zone);
	n = bpf_core_enum_value(enum zone_stat_item, NR_VM_ZONE_STAT_ITEMS);
	if (n > ZONE_ITEMS_MAX)
		n = ZONE_ITEMS_MAX;
	__builtin_memset(sc->zone_sum, 0, sizeof(sc->zone_sum));
	sc->managed = 0;
	sc->wmark_low = 0;
	for (z = 0; z < ZONES_MAX && z < nzones; z++) {
		zone = pgdat + bpf_core_field_offset(struct pglist_data, node_zones) + z * zone_size;
		if (bpf_probe_read_kernel(sc->zone, n * sizeof(__s64), zone + bpf_core_field_offset(struct zone, vm_stat)))
			return 0;
		for (i = 0; i < ZONE_ITEMS_MAX && i < n; i++)
			sc->zone_sum[i] += sc->zone[i];
		sc->managed += zone_managed_pages((struct zone *)zone);
		sc->wmark_low += low_wmark_pages(zone);
	}

	__builtin_memset(out, 0, sizeof(*out));
	nid = BPF_CORE_READ((struct pglist_data *)pgdat, node_id);
	out->node = nid;
	out->ts_ns = now_ns;
	out->seq = seq;
	out->trigger = trigger;
	node_items(sc);
	zone_items(sc);
	out->value[SYSSTAT_MANAGED] = sc->managed;
	out->value[SYSSTAT_WMARK_LOW] = sc->wmark_low;
	out->value[SYSSTAT_TOTALRESERVE] = BPF_CORE_READ((struct pglist_data *)pgdat, totalreserve_pages);
	out->present |= 1ULL << SYSSTAT_MANAGED | 1ULL << SYSSTAT_WMARK_LOW | 1ULL << SYSSTAT_TOTALRESERVE;
	return bpf_map_update_elem(&nodes, &nid, out, BPF_ANY) == 0;
}

static __always_inline void take_snapshot(__u64 now_ns, __u32 trigger)
{
	struct sysstat_scratch *sc;
	__u32 zero = 0, nid, seen = 0;
	__u64 seq;
	char *memcg, *pgdat;

	sc = bpf_map_lookup_elem(&scratch, &zero);
	if (!sc)
		return;
	memcg = root_memcg();
	if (!memcg) {
		__sync_fetch_and_add(&walk_failures, 1);
		return;
	}
	__sync_fetch_and_add(&snapshots, 1);
	seq = snapshots;
	for (nid = 0; nid < NODES_MAX && nid < nr_nodes; nid++) {
		pgdat = node_pgdat(memcg, nid);
		if (pgdat)
			seen += snapshot_node(sc, pgdat, now_ns, seq, trigger);
	}
	nodes_seen = seen;
}

static __always_inline int on_page_alloc(void)
{
	__u64 now_ns = bpf_ktime_get_ns();

	if (now_ns - last_snapshot_ns < min_period_ns)
		return 0;
	last_snapshot_ns = now_ns;
	take_snapshot(now_ns, SYSSTAT_TRIGGER_ALLOC);
	return 0;
}

SEC("tp_btf/mm_page_alloc")
int BPF_PROG(snapshot_on_alloc)
{
	return on_page_alloc();
}

SEC("raw_tp/mm_page_alloc")
int BPF_PROG(snapshot_on_alloc_raw)
{
	return on_page_alloc();
}

/* Run by user space with BPF_PROG_TEST_RUN for a snapshot now, whether or
 * not anything was allocated. */
SEC("raw_tp")
int snapshot_now(void *ctx)
{
	__sync_fetch_and_add(&forced_snapshots, 1);
	take_snapshot(bpf_ktime_get_ns(), SYSSTAT_TRIGGER_FORCED);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
