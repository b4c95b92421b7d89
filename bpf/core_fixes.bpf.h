/* SPDX-License-Identifier: GPL-2.0 */
/* Kernel-version differences, one section per report: flavor structs
 * (preserve_access_index, only the fields needed) and one accessor each,
 * branching on bpf_core_field_exists / bpf_core_type_exists. Convention
 * that `memwatcher doctor --btf` checks: a field some kernel lacks is read
 * only after an existence check of that field, or of another layout of the
 * same field (struct x.f vs struct x___old.f). */
#ifndef MEMWATCHER_CORE_FIXES_BPF_H
#define MEMWATCHER_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/* ---- procstat ---- */

/* mm->rss_stat changed type in Linux 6.2 (commit f1a7941243c1 "mm: convert
 * mm's rss stats into percpu_counter"): up to 6.1 it is
 * `struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }`, from 6.2
 * `struct percpu_counter rss_stat[NR_MM_COUNTERS]`. The counter index is
 * the value of MM_FILEPAGES, ... from the kernel's BTF (an anonymous enum,
 * which CO-RE cannot relocate: user space passes it in rodata); element
 * sizes come from the kernel's BTF too, since struct percpu_counter grows
 * with lock debugging options. */
struct mm_rss_stat___procstat_old {
	atomic_long_t count[4];
} __attribute__((preserve_access_index));

struct mm_struct___procstat_old {
	struct mm_rss_stat___procstat_old rss_stat;
} __attribute__((preserve_access_index));

struct mm_struct___procstat_new {
	struct percpu_counter rss_stat[4];
} __attribute__((preserve_access_index));

/* Rss counter `item` of mm: *count is the shared count; *percpu_parts the
 * (__percpu) address of its per-CPU s32 parts, 0 with the atomic layout,
 * whose count is exact. Plain loads (the program's BTF pointer plus
 * offsets the verifier knows and checks against the kernel's types), no
 * helper calls: this runs on every context switch. */
static __always_inline void procstat_read_rss_counter(const struct mm_struct *mm, __u32 item, __s64 *count,
						      __u64 *percpu_parts)
{
	const struct mm_struct___procstat_old *old = (const void *)mm;
	const struct mm_struct___procstat_new *new = (const void *)mm;
	__u64 off;

	if (bpf_core_field_exists(old->rss_stat)) {
		/* A helper read: 6.1's verifier cannot walk an array of the
		 * atomic_long_t typedef ("Type 'atomic_long_t' is not a struct"). */
		off = bpf_core_field_offset(old->rss_stat.count) + item * bpf_core_type_size(atomic_long_t);
		*percpu_parts = 0;
		if (bpf_probe_read_kernel(count, sizeof(*count), (const void *)mm + off))
			*count = 0;
		return;
	}
	off = bpf_core_field_offset(new->rss_stat) + item * bpf_core_type_size(struct percpu_counter);
	*count = *(const __s64 *)((const void *)mm + off + bpf_core_field_offset(struct percpu_counter, count));
	*percpu_parts = *(const __u64 *)((const void *)mm + off + bpf_core_field_offset(struct percpu_counter, counters));
}

/* mm->pgtables_bytes counts the page tables of every level since Linux 4.15
 * (commit af5b0f6a09e4, "mm: consolidate page table accounting"); older
 * kernels count them per level, which no report reads. False without it.
 * A plain load: mm must be a pointer the verifier trusts (procstat's
 * prev->mm, on every context switch); oom_mm_pgtables_bytes probes. */
static __always_inline bool mm_pgtables_bytes(const struct mm_struct *mm, __u64 *bytes)
{
	if (!bpf_core_field_exists(mm->pgtables_bytes))
		return false;
	*bytes = mm->pgtables_bytes.counter;
	return true;
}

/* ---- pr ---- */

/* struct reclaim_stat, passed by pointer to mm_vmscan_lru_shrink_inactive
 * (include/linux/vmstat.h), is not a stable layout: nr_activate became an
 * array indexed by anon/file in Linux 5.2 (a single counter before),
 * nr_pageout appeared later in the 5.x series, and nr_congested is absent
 * from kernels newer than 6.18 (the one this was written on). So every
 * field is read through a flavor that lists it and guarded by
 * bpf_core_field_exists. Absent fields read as 0 here; user space learns
 * which exist from the same kernel BTF and shows them as missing, not 0. */
struct reclaim_stat___pr {
	unsigned int nr_dirty;
	unsigned int nr_unqueued_dirty;
	unsigned int nr_congested;
	unsigned int nr_writeback;
	unsigned int nr_immediate;
	unsigned int nr_pageout;
	unsigned int nr_activate[2];
	unsigned int nr_ref_keep;
	unsigned int nr_unmap_fail;
} __attribute__((preserve_access_index));

struct reclaim_stat___pr_scalar {
	unsigned int nr_activate;
} __attribute__((preserve_access_index));

struct pr_reclaim_stat {
	__u32 dirty;
	__u32 unqueued_dirty;
	__u32 congested;
	__u32 writeback;
	__u32 immediate;
	__u32 pageout;
	__u32 activate[2];
	__u32 ref_keep;
	__u32 unmap_fail;
};

#define PR_READ_IF_EXISTS(dst, src, field)                       \
	do {                                                     \
		if (bpf_core_field_exists((src)->field))         \
			(dst) = BPF_CORE_READ((src), field);     \
	} while (0)

/* Copy *stat (a struct reclaim_stat *) into out; `file` says which LRU the
 * event scanned, where an old scalar nr_activate is booked. */
static __always_inline void pr_read_reclaim_stat(const void *stat, int file, struct pr_reclaim_stat *out)
{
	const struct reclaim_stat___pr *s = stat;
	const struct reclaim_stat___pr_scalar *old = stat;

	__builtin_memset(out, 0, sizeof(*out));
	PR_READ_IF_EXISTS(out->dirty, s, nr_dirty);
	PR_READ_IF_EXISTS(out->unqueued_dirty, s, nr_unqueued_dirty);
	PR_READ_IF_EXISTS(out->congested, s, nr_congested);
	PR_READ_IF_EXISTS(out->writeback, s, nr_writeback);
	PR_READ_IF_EXISTS(out->immediate, s, nr_immediate);
	PR_READ_IF_EXISTS(out->pageout, s, nr_pageout);
	PR_READ_IF_EXISTS(out->ref_keep, s, nr_ref_keep);
	PR_READ_IF_EXISTS(out->unmap_fail, s, nr_unmap_fail);
	if (bpf_core_field_exists(s->nr_activate)) {
		out->activate[0] = BPF_CORE_READ(s, nr_activate[0]);
		out->activate[1] = BPF_CORE_READ(s, nr_activate[1]);
	} else if (bpf_core_field_exists(old->nr_activate)) {
		out->activate[file ? 1 : 0] = BPF_CORE_READ(old, nr_activate);
	}
}

/* struct scan_control is private to mm/vmscan.c, so its layout moves with
 * any change to that file: members are found by name, and only the ones
 * named here. The `proactive` bit (reclaim asked for through memory.reclaim)
 * exists since Linux 5.19; without it no reclaim counts as proactive. */
struct scan_control___pr {
	unsigned long nr_to_reclaim;
	struct mem_cgroup *target_mem_cgroup;
	unsigned int proactive : 1;
	s8 order;
	s8 priority;
	s8 reclaim_idx;
	unsigned long nr_scanned;
	unsigned long nr_reclaimed;
} __attribute__((preserve_access_index));

/* What the shrink_node programs keep of a struct scan_control, in pages. */
struct pr_scan_control {
	__u64 to_reclaim_pages;
	__u64 scanned_pages;
	__u64 reclaimed_pages;
	__s32 priority;
	__s32 order;
	__s32 reclaim_idx;
	bool memcg;	/* target_mem_cgroup set: reclaim for a cgroup's limit */
	bool proactive;
};

static __always_inline void pr_read_scan_control(const void *scan_control, struct pr_scan_control *out)
{
	const struct scan_control___pr *sc = scan_control;

	out->to_reclaim_pages = BPF_CORE_READ(sc, nr_to_reclaim);
	out->scanned_pages = BPF_CORE_READ(sc, nr_scanned);
	out->reclaimed_pages = BPF_CORE_READ(sc, nr_reclaimed);
	out->priority = BPF_CORE_READ(sc, priority);
	out->order = BPF_CORE_READ(sc, order);
	out->reclaim_idx = BPF_CORE_READ(sc, reclaim_idx);
	out->memcg = BPF_CORE_READ(sc, target_mem_cgroup) != NULL;
	out->proactive = bpf_core_field_exists(sc->proactive) && BPF_CORE_READ_BITFIELD_PROBED(sc, proactive);
}

/* Whether the current task is the node's kswapd. current_is_kswapd() tests
 * PF_KSWAPD, a #define BTF does not carry; pgdat->kswapd says the same. */
struct pglist_data___pr {
	struct task_struct *kswapd;
} __attribute__((preserve_access_index));

static __always_inline bool pr_current_is_kswapd(const void *pgdat)
{
	return (__u64)BPF_CORE_READ((const struct pglist_data___pr *)pgdat, kswapd) == bpf_get_current_task();
}

/* ---- paf, sysstat ---- */

/* zone->managed_pages is an atomic_long_t since Linux 5.0 (commit 9705bea5f833,
 * "mm: convert zone->managed_pages to atomic variable"), a plain unsigned long
 * before. */
struct zone___paf_ulong {
	unsigned long managed_pages;
} __attribute__((preserve_access_index));

static __always_inline unsigned long zone_managed_pages(const struct zone *zone)
{
	if (bpf_core_field_exists(zone->managed_pages.counter))
		return BPF_CORE_READ(zone, managed_pages.counter);
	return BPF_CORE_READ((const struct zone___paf_ulong *)zone, managed_pages);
}

/* zone->watermark_boost exists since Linux 5.0 (commit 1c30844d2dfe, "mm:
 * reclaim small amounts of memory when an external fragmentation event
 * occurs"); before it no watermark was boosted. */
static __always_inline unsigned long zone_watermark_boost(const struct zone *zone)
{
	if (bpf_core_field_exists(zone->watermark_boost))
		return BPF_CORE_READ(zone, watermark_boost);
	return 0;
}

/* page->flags is a memdesc_flags_t (a struct holding the word as .f) since
 * Linux 6.18 (the "mm: introduce memdesc_flags_t" series), an unsigned long
 * before. */
struct page___paf_ulong {
	unsigned long flags;
} __attribute__((preserve_access_index));

static __always_inline unsigned long paf_page_flags(const struct page *page)
{
	if (bpf_core_field_exists(page->flags.f))
		return BPF_CORE_READ(page, flags.f);
	return BPF_CORE_READ((const struct page___paf_ulong *)page, flags);
}

/* ---- oom ---- */

/* Rss counter `item` of mm as the kernel's get_mm_counter() reads it: the
 * shared count without per-CPU parts (what its OOM report prints), negative
 * as 0. Layouts as in procstat_read_rss_counter; probe reads only, since
 * mm may be a plain number here. */
static __always_inline __u64 oom_mm_counter(const struct mm_struct *mm, __u32 item)
{
	const struct mm_struct___procstat_old *old = (const void *)mm;
	const struct mm_struct___procstat_new *new = (const void *)mm;
	__s64 count = 0;
	__u64 off;

	if (bpf_core_field_exists(old->rss_stat))
		off = bpf_core_field_offset(old->rss_stat.count) + item * bpf_core_type_size(atomic_long_t);
	else
		off = bpf_core_field_offset(new->rss_stat) + item * bpf_core_type_size(struct percpu_counter) +
		      bpf_core_field_offset(struct percpu_counter, count);
	if (bpf_probe_read_kernel(&count, sizeof(count), (const void *)mm + off))
		return 0;
	return count < 0 ? 0 : count;
}

/* mm_pgtables_bytes for an mm that is only a number: a probe read. */
static __always_inline bool oom_mm_pgtables_bytes(const struct mm_struct *mm, __u64 *bytes)
{
	if (!bpf_core_field_exists(mm->pgtables_bytes))
		return false;
	*bytes = BPF_CORE_READ(mm, pgtables_bytes.counter);
	return true;
}

/* kernfs_node->parent became the RCU-protected __parent in Linux 6.15
 * ("kernfs: Use RCU to access kernfs_node::parent."). */
struct kernfs_node___oom_old {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *oom_kernfs_parent(const struct kernfs_node *kn)
{
	const struct kernfs_node___oom_old *old = (const void *)kn;

	if (bpf_core_field_exists(old->parent))
		return BPF_CORE_READ(old, parent);
	if (bpf_core_field_exists(kn->__parent))
		return BPF_CORE_READ(kn, __parent);
	return NULL;
}

/* ---- sysstat ---- */

/* vm_stat items that some supported kernels have and the vmlinux.h these
 * objects are built against (6.18) lacks. Only the names matter: CO-RE
 * matches an enumerator by its name without the ___ suffix inside an enum
 * of the same name without its ___ suffix, and bpf_core_enum_value_exists
 * tells whether the running kernel has it.
 * - NR_SLAB_RECLAIMABLE / NR_SLAB_UNRECLAIMABLE: the names before Linux 5.9
 *   ("mm: memcg: convert vmstat slab counters to bytes" added the _B
 *   suffix). Node and global counters hold pages under both names: the
 *   kernel shifts byte deltas down to pages before folding them in.
 * - NR_WRITEBACK_TEMP: FUSE's temporary writeback pages, gone once FUSE
 *   stopped using temporary folios for writeback (6.1x series).
 * - NR_BOUNCE: a zone item, removed with block-layer bounce buffering. */
enum node_stat_item___sysstat {
	NR_SLAB_RECLAIMABLE___sysstat = 0,
	NR_SLAB_UNRECLAIMABLE___sysstat = 1,
	NR_WRITEBACK_TEMP___sysstat = 2,
};

enum zone_stat_item___sysstat {
	NR_BOUNCE___sysstat = 0,
};

#endif
