// SPDX-License-Identifier: GPL-2.0
/* paf: page allocations counted per (node, zone, order, migratetype, gfp);
 * failed allocations and kswapd wakeups streamed with the zone's watermarks,
 * present/managed/free pages at that moment; a snapshot of every zone on
 * demand (BPF_PROG_TEST_RUN of `snapshot`). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "records.bpf.h"
#include "core_fixes.bpf.h"
#include "paf.h"

EXPORT_RECORD(paf_event);

/* 0: every process; else only allocations and wakeups asked for by this tgid. */
const volatile __u32 target_tgid = 0;
/* Node ids 0..nr_nodes-1 are possible; zone indexes 0..nr_zones-1 exist. */
const volatile __u32 nr_nodes = 1;
const volatile __u32 nr_zones = 1;
/* Where page->flags keeps a page's zone and node numbers (found by user space
 * and checked against pages on each zone's free lists). zone_bits 0: not known;
 * node_bits 0: the node is not in page->flags. */
const volatile __u32 zone_shift = 0;
const volatile __u32 zone_bits = 0;
const volatile __u32 node_shift = 0;
const volatile __u32 node_bits = 0;
/* gfp zone modifier masks (__GFP_DMA, __GFP_HIGHMEM, __GFP_DMA32, __GFP_MOVABLE,
 * from the running kernel) and the highest zone each combination of them may
 * use, indexed by DMA | HIGHMEM << 1 | DMA32 << 2 | MOVABLE << 3. */
const volatile __u64 gfp_dma = 0;
const volatile __u64 gfp_highmem = 0;
const volatile __u64 gfp_dma32 = 0;
const volatile __u64 gfp_movable = 0;
const volatile __u32 gfp_zone_table[16] = {};
/* Submit failure / kswapd events to the ring buffer. */
const volatile bool stream_events = false;

__u64 events_dropped = 0;	/* ring buffer full */
__u64 keys_dropped = 0;		/* allocations not counted: the counts map was full */
__u64 zone_unreadable = 0;	/* events whose zone could not be found */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct paf_key);
	__type(value, struct paf_counts);
} counts SEC(".maps");

/* Slot node * PAF_MAX_ZONES + zone: the last snapshot of that zone. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAF_MAX_NODES * PAF_MAX_ZONES);
	__type(key, __u32);
	__type(value, struct paf_zone);
} zones SEC(".maps");

/* Slot as in zones: kswapd wakeups (cumulative). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAF_MAX_NODES * PAF_MAX_ZONES);
	__type(key, __u32);
	__type(value, __u64);
} kswapd_wakeups SEC(".maps");

/* struct pglist_data * of each node, found by the snapshot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAF_MAX_NODES);
	__type(key, __u32);
	__type(value, __u64);
} pgdats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

static __always_inline __u64 read_u64(const void *addr)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), addr);
	return v;
}

/* node_data[] is out of reach: kernel BTF describes only per-CPU variables and
 * kallsyms lists data symbols only with CONFIG_KALLSYMS_ALL. But every memory
 * cgroup has a per-node lruvec whose pgdat is that node's pglist_data (set on
 * first use), so walk from the current task's memcg up to the root. */
static __always_inline struct pglist_data *pgdat_from_memcg(__u32 nid)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct cgroup_subsys_state *css;
	struct mem_cgroup_per_node *pn;
	struct pglist_data *pgdat;
	void *subsys;
	int i;

	subsys = (void *)BPF_CORE_READ(task, cgroups) + bpf_core_field_offset(struct css_set, subsys);
	css = (void *)read_u64(subsys + id * sizeof(void *));
	for (i = 0; i < 16; i++) {
		void *memcg;

		if (!css)
			break;
		memcg = (void *)css - bpf_core_field_offset(struct mem_cgroup, css);

		pn = (void *)read_u64(memcg + bpf_core_field_offset(struct mem_cgroup, nodeinfo) +
				      nid * sizeof(void *));
		pgdat = pn ? BPF_CORE_READ(pn, lruvec.pgdat) : NULL;
		if (pgdat && BPF_CORE_READ(pgdat, node_id) == nid)
			return pgdat;
		css = BPF_CORE_READ(css, parent);
	}
	return NULL;
}

static __always_inline struct zone *node_zone(__u32 nid, __u32 zid)
{
	struct pglist_data *pgdat = NULL;
	__u64 *cached;

	if (nid >= PAF_MAX_NODES || nid >= nr_nodes || zid >= nr_zones)
		return NULL;
	cached = bpf_map_lookup_elem(&pgdats, &nid);
	if (cached && *cached)
		pgdat = (void *)*cached;
	else
		pgdat = pgdat_from_memcg(nid);
	if (!pgdat)
		return NULL;
	return (void *)pgdat + bpf_core_field_offset(struct pglist_data, node_zones) +
	       zid * bpf_core_type_size(struct zone);
}

static __always_inline void read_zone_state(struct zone *z, struct paf_zone_state *s)
{
	void *wmark = (void *)z + bpf_core_field_offset(struct zone, _watermark);
	void *vm_stat = (void *)z + bpf_core_field_offset(struct zone, vm_stat);

	s->wmark_min_pages = read_u64(wmark + bpf_core_enum_value(enum zone_watermarks, WMARK_MIN) * sizeof(long));
	s->wmark_low_pages = read_u64(wmark + bpf_core_enum_value(enum zone_watermarks, WMARK_LOW) * sizeof(long));
	s->wmark_high_pages = read_u64(wmark + bpf_core_enum_value(enum zone_watermarks, WMARK_HIGH) * sizeof(long));
	s->boost_pages = zone_watermark_boost(z);
	s->present_pages = BPF_CORE_READ(z, present_pages);
	s->managed_pages = zone_managed_pages(z);
	s->free_pages = read_u64(vm_stat + bpf_core_enum_value(enum zone_stat_item, NR_FREE_PAGES) * sizeof(long));
}

/* page->flags of one page on the zone's free lists (those pages belong to the
 * zone by construction), so user space can check where the zone number sits. */
static __always_inline bool sample_free_page(struct zone *z, __u64 *flags)
{
	__u32 n_orders = bpf_core_field_size(struct zone, free_area) / bpf_core_type_size(struct free_area);
	__u32 n_types = bpf_core_field_size(struct free_area, free_list) / sizeof(struct list_head);
	void *area = (void *)z + bpf_core_field_offset(struct zone, free_area);
	__u32 o, m;

	/* Fully unrolled (constant trip counts, CO-RE bounds tested inside):
	 * 6.1's verifier rejects the rolled loop's shape (a back-edge reached
	 * by falling through). */
#pragma unroll
	for (o = 0; o < 16; o++) {
		void *lists = area + o * bpf_core_type_size(struct free_area) +
			      bpf_core_field_offset(struct free_area, free_list);

		if (o >= n_orders)
			break;
#pragma unroll
		for (m = 0; m < 8; m++) {
			void *head = lists + m * sizeof(struct list_head);
			void *next;

			if (m >= n_types)
				break;
			next = (void *)read_u64(head);
			if (next && next != head) {
				*flags = paf_page_flags(next - bpf_core_field_offset(struct page, lru));
				return true;
			}
		}
	}
	return false;
}

static __always_inline void snapshot_zone(__u32 nid, __u32 zid, struct pglist_data *pgdat, bool sample)
{
	__u32 slot = nid * PAF_MAX_ZONES + zid;
	struct paf_zone *out;
	struct zone *z;

	out = bpf_map_lookup_elem(&zones, &slot);
	if (!out)
		return;
	out->node = nid;
	out->zone = zid;
	out->valid = 0;
	out->has_sample = 0;
	if (!pgdat)
		return;
	z = (void *)pgdat + bpf_core_field_offset(struct pglist_data, node_zones) +
	    zid * bpf_core_type_size(struct zone);
	read_zone_state(z, &out->state);
	out->spanned_pages = BPF_CORE_READ(z, spanned_pages);
	out->start_pfn = BPF_CORE_READ(z, zone_start_pfn);
	bpf_probe_read_kernel_str(out->name, sizeof(out->name), BPF_CORE_READ(z, name));
	if (sample)
		out->has_sample = sample_free_page(z, &out->sample_flags);
	out->valid = 1;
}

/* One node's zones into the zones map; sample: also one free page's flags per zone. */
static __always_inline void take_snapshot(__u32 nid, bool sample)
{
	struct pglist_data *pgdat;
	__u64 ptr;
	__u32 zid;

	if (nid >= PAF_MAX_NODES || nid >= nr_nodes)
		return;
	pgdat = pgdat_from_memcg(nid);
	ptr = (__u64)pgdat;
	bpf_map_update_elem(&pgdats, &nid, &ptr, BPF_ANY);
	for (zid = 0; zid < PAF_MAX_ZONES && zid < nr_zones; zid++)
		snapshot_zone(nid, zid, pgdat, sample);
}

/* Highest zone the gfp mask allows, then down to the first zone with managed
 * pages (as the allocator's zonelist walk does on the local node). */
static __always_inline __u32 failure_zone(__u32 nid, __u64 gfp)
{
	__u32 combo = (gfp & gfp_dma ? 1 : 0) | (gfp & gfp_highmem ? 2 : 0) | (gfp & gfp_dma32 ? 4 : 0) |
		      (gfp & gfp_movable ? 8 : 0);
	__s32 z = gfp_zone_table[combo & 15];
	int i;

	for (i = 0; i < PAF_MAX_ZONES && z >= 0; i++, z--) {
		__u32 slot = nid * PAF_MAX_ZONES + z;
		struct paf_zone *zi = bpf_map_lookup_elem(&zones, &slot);

		if (zi && zi->valid && zi->state.managed_pages)
			return z;
	}
	return PAF_UNKNOWN;
}

static __always_inline void emit(__u32 kind, __u32 nid, __u32 zid, __u32 order, __u64 gfp, __s32 migratetype)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct paf_zone_state s = {};
	struct paf_event *e;
	struct zone *z;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&events_dropped, 1);
		return;
	}
	z = zid == PAF_UNKNOWN ? NULL : node_zone(nid, zid);
	if (z)
		read_zone_state(z, &s);
	else
		__sync_fetch_and_add(&zone_unreadable, 1);
	e->ts_ns = bpf_ktime_get_ns();
	e->gfp = gfp;
	e->zone_state = s;
	e->kind = kind;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->node = nid;
	e->zone = zid;
	e->order = order;
	e->migratetype = migratetype;
	e->zone_valid = z != NULL;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline bool traced(void)
{
	return !target_tgid || (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

static __always_inline int count_alloc(struct page *page, __u32 order, __u64 gfp, __s32 migratetype)
{
	struct paf_key key = {};
	struct paf_counts zero = {}, *c;

	if (!traced())
		return 0;
	key.gfp = gfp;
	key.order = order;
	key.migratetype = migratetype;
	if (page) {
		__u64 flags = paf_page_flags(page);

		key.zone = zone_bits ? (flags >> zone_shift) & ((1ULL << zone_bits) - 1) : PAF_UNKNOWN;
		if (node_bits)
			key.node = (flags >> node_shift) & ((1ULL << node_bits) - 1);
		else
			key.node = nr_nodes == 1 ? 0 : bpf_get_numa_node_id();
	} else {
		key.node = bpf_get_numa_node_id();
		key.zone = failure_zone(key.node, gfp);
	}
	c = bpf_map_lookup_elem(&counts, &key);
	if (!c) {
		bpf_map_update_elem(&counts, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&counts, &key);
		if (!c) {
			__sync_fetch_and_add(&keys_dropped, 1);
			return 0;
		}
	}
	/* Per-CPU values: no other CPU writes them. */
	c->allocs += 1;
	if (!page) {
		c->failures += 1;
		if (stream_events)
			emit(PAF_EV_FAILURE, key.node, key.zone, order, gfp, migratetype);
	}
	return 0;
}

static __always_inline int count_kswapd_wakeup(__u32 nid, __u32 zid, __u32 order, __u64 gfp)
{
	__u32 slot = nid * PAF_MAX_ZONES + zid;
	__u64 *n;

	if (!traced() || nid >= PAF_MAX_NODES || zid >= PAF_MAX_ZONES)
		return 0;
	n = bpf_map_lookup_elem(&kswapd_wakeups, &slot);
	if (n)
		__sync_fetch_and_add(n, 1);
	if (stream_events)
		emit(PAF_EV_KSWAPD, nid, zid, order, gfp, -1);
	return 0;
}

SEC("tp_btf/mm_page_alloc")
int BPF_PROG(on_page_alloc, struct page *page, unsigned int order, gfp_t gfp_flags, int migratetype)
{
	return count_alloc(page, order, gfp_flags, migratetype);
}

SEC("tp_btf/mm_vmscan_wakeup_kswapd")
int BPF_PROG(on_wakeup_kswapd, int nid, int zid, int order, gfp_t gfp_flags)
{
	return count_kswapd_wakeup(nid, zid, order, gfp_flags);
}

/* Run by user space (BPF_PROG_TEST_RUN, arguments: node id, sample flag):
 * refresh that node's slots of the zones map. */
SEC("raw_tp")
int snapshot(__u64 *ctx)
{
	take_snapshot(ctx[0], ctx[1]);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
