/* Records of the page allocation report (paf), shared by paf.bpf.c and Python. */
#ifndef MEMWATCHER_PAF_H
#define MEMWATCHER_PAF_H

/* Bounds of the per-zone tables: zone slot = node * PAF_MAX_ZONES + zone index.
 * The kernel's own counts (possible nodes, __MAX_NR_ZONES) are set at load time. */
#define PAF_MAX_NODES 64
#define PAF_MAX_ZONES 8
/* Zone (or node) of an allocation that could not be attributed. */
#define PAF_UNKNOWN 255

/* Event kinds. */
#define PAF_EV_FAILURE 1
#define PAF_EV_KSWAPD 2

/* Aggregation key of page allocations (tp_btf/mm_page_alloc). */
struct paf_key {
	__u64 gfp;
	__u32 node;
	__u32 zone;
	__u32 order;
	__s32 migratetype;
};

/* Cumulative counts of one key (per CPU in the map). */
struct paf_counts {
	__u64 allocs;
	__u64 failures;
};

/* A zone's watermarks and sizes at one moment. The watermarks are the raw
 * _watermark[] values (without watermark_boost). */
struct paf_zone_state {
	__u64 wmark_min_pages;
	__u64 wmark_low_pages;
	__u64 wmark_high_pages;
	__u64 boost_pages;
	__u64 present_pages;
	__u64 managed_pages;
	__s64 free_pages;
};

/* One zone as the kernel holds it right now. */
struct paf_zone {
	struct paf_zone_state state;
	__u64 spanned_pages;
	__u64 start_pfn;
	/* page->flags of one page found on this zone's free lists (see has_sample). */
	__u64 sample_flags;
	__u32 node;
	__u32 zone;
	__u32 valid;
	__u32 has_sample;
	char name[16];
};

/* A failed allocation or a kswapd wakeup, with the zone's state at that moment. */
struct paf_event {
	__u64 ts_ns;
	__u64 gfp;
	struct paf_zone_state zone_state; /* zeros when zone_valid is 0 */
	__u32 kind;
	__u32 pid;
	__u32 tid;
	__u32 node;
	__u32 zone;
	__u32 order;
	__s32 migratetype;
	__u32 zone_valid;
	char comm[16];
};

#endif
