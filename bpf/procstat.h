/* Per-process memory snapshot shared by procstat.bpf.c and tools/procstat.py. */
#ifndef MEMWATCHER_PROCSTAT_H
#define MEMWATCHER_PROCSTAT_H

#define PROCSTAT_COMM_LEN 16
/* Upper bound of possible CPUs whose per-CPU rss parts are summed. */
#define PROCSTAT_MAX_CPUS 1024

/* procstat_entry.flags: the kernel has no mm->pgtables_bytes; per-CPU rss
 * parts could not be summed (rss lags by up to the counter batch per CPU). */
#define PROCSTAT_F_NO_PGTABLES 1
#define PROCSTAT_F_RSS_INEXACT 2

/* One process (tgid), as its mm looked when one of its threads was last
 * switched out. Page counts are in the kernel's page size. */
struct procstat_entry {
	__u64 total_vm_pages;
	__u64 data_vm_pages;
	__u64 stack_vm_pages;
	__u64 hiwater_rss_pages; /* mm->hiwater_rss: moved only when rss is about to drop */
	__u64 rss_file_pages;
	__u64 rss_anon_pages;
	__u64 rss_shmem_pages;
	__u64 swap_pages; /* MM_SWAPENTS */
	__u64 rss_max_pages; /* largest file+anon+shmem of any of our samples */
	__u64 pgtables_bytes;
	__u64 switches; /* switch-outs seen since tracking began (cumulative) */
	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the first sample in the tick
	 * (jiffy) of the last sample: precise to a scheduler tick. */
	__u64 last_seen_ns;
	__u64 last_seen_jiffies;
	__u64 exec_id; /* the leader's self_exec_id at the last comm read (internal: tells an exec) */
	__u32 tgid;
	__u32 flags; /* PROCSTAT_F_* */
	char comm[PROCSTAT_COMM_LEN]; /* the thread group leader's comm */
};

#endif
