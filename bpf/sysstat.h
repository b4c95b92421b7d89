/* SPDX-License-Identifier: GPL-2.0 */
/* sysstat: snapshot of one NUMA node's vm_stat counters, shared by
 * bpf/sysstat.bpf.c and src/memwatcher/tools/sysstat.py. */
#ifndef MEMWATCHER_SYSSTAT_H
#define MEMWATCHER_SYSSTAT_H

/* Slots of sysstat_node.value. Each holds one kernel counter in the kernel's
 * own unit: pages, except SYSSTAT_KERNEL_STACK_KB (KiB). The kernel's index
 * of each counter is resolved at load time (CO-RE enum value relocation),
 * never fixed here. Node items are the node's own vm_stat; zone items are
 * summed over the node's zones. */
#define SYSSTAT_INACTIVE_ANON 0
#define SYSSTAT_ACTIVE_ANON 1
#define SYSSTAT_INACTIVE_FILE 2
#define SYSSTAT_ACTIVE_FILE 3
#define SYSSTAT_UNEVICTABLE 4
#define SYSSTAT_SLAB_RECLAIMABLE 5
#define SYSSTAT_SLAB_UNRECLAIMABLE 6
#define SYSSTAT_ANON_MAPPED 7
#define SYSSTAT_FILE_MAPPED 8
#define SYSSTAT_FILE_PAGES 9
#define SYSSTAT_FILE_DIRTY 10
#define SYSSTAT_WRITEBACK 11
#define SYSSTAT_WRITEBACK_TEMP 12
#define SYSSTAT_SHMEM 13
#define SYSSTAT_SHMEM_THPS 14
#define SYSSTAT_SHMEM_PMDMAPPED 15
#define SYSSTAT_FILE_THPS 16
#define SYSSTAT_FILE_PMDMAPPED 17
#define SYSSTAT_ANON_THPS 18
#define SYSSTAT_KERNEL_MISC_RECLAIMABLE 19
#define SYSSTAT_KERNEL_STACK_KB 20
#define SYSSTAT_PAGETABLE 21
#define SYSSTAT_SECONDARY_PAGETABLE 22
#define SYSSTAT_SWAPCACHE 23
#define SYSSTAT_FREE_PAGES 24
#define SYSSTAT_MLOCK 25
#define SYSSTAT_BOUNCE 26
#define SYSSTAT_FREE_CMA_PAGES 27
/* Not vm_stat counters, the other inputs of the kernel's MemAvailable estimate
 * (si_mem_available): pages the node's zones manage (MemTotal's parts), their low
 * watermarks with any boost (low_wmark_pages), and the node's totalreserve_pages. */
#define SYSSTAT_MANAGED 28
#define SYSSTAT_WMARK_LOW 29
#define SYSSTAT_TOTALRESERVE 30
#define SYSSTAT_NR_SLOTS 32

/* sysstat_node.trigger: what took the snapshot. */
#define SYSSTAT_TRIGGER_ALLOC 1
#define SYSSTAT_TRIGGER_FORCED 2

/* Value of the `nodes` array map, indexed by node id. */
struct sysstat_node {
	__u64 ts_ns;   /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) when taken */
	__u64 seq;     /* snapshot number; equal on every node of one snapshot */
	__u64 present; /* bit s set: this kernel has the counter of slot s */
	__u32 node;    /* node id (pglist_data.node_id) */
	__u32 trigger; /* SYSSTAT_TRIGGER_* */
	__s64 value[SYSSTAT_NR_SLOTS];
};

#endif
