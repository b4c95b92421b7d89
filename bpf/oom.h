/* Records of the OOM kill report (oom), shared by oom.bpf.c and Python. */
#ifndef MEMWATCHER_OOM_H
#define MEMWATCHER_OOM_H

#define OOM_COMM_LEN 16
/* A cgroup path, from its hierarchy's root: names are copied while the path is
 * shorter than half of this, so a longer path is cut (OOM_F_*_PATH_CUT). */
#define OOM_PATH_LEN 512
/* Levels of cgroups walked up from a memory cgroup (path, ancestry checks). */
#define OOM_MAX_DEPTH 32

/* oom_kill.flags */
#define OOM_F_VICTIM_TASK 1	/* the victim's task_struct was found: its fields are valid */
#define OOM_F_MEMCG 2		/* the victim has a memory cgroup: cgroup* fields are valid */
#define OOM_F_CONTROL 4		/* the killer's struct oom_control was found: kind, order, gfp, oom_cgroup* */
#define OOM_F_OOM_MEMCG 8	/* oom_control->memcg set: a memory cgroup OOM (else global) */
#define OOM_F_PATH_CUT 16	/* cgroup path longer than the record holds */
#define OOM_F_OOM_PATH_CUT 32	/* oom_cgroup path longer than the record holds */
#define OOM_F_NO_PGTABLES 64	/* the kernel has no mm->pgtables_bytes */

/* One OOM kill: the victim as the kernel marked it (oom:mark_victim, right
 * after sending it SIGKILL), the task that ran the OOM killer (the one whose
 * allocation or charge failed) and the killer's decision. Page counts are in
 * the kernel's page size; rss counters are the kernel's own view at the kill
 * (what its "Killed process" log line prints). */
struct oom_kill {
	__u64 ts_ns; /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u64 total_vm_pages;
	__u64 rss_anon_pages;
	__u64 rss_file_pages;
	__u64 rss_shmem_pages;
	__u64 swap_pages; /* MM_SWAPENTS */
	__u64 pgtables_bytes;
	/* The victim's memory cgroup (valid with OOM_F_MEMCG). */
	__u64 cgroup_id; /* kernfs node id: the directory's inode number */
	__u64 cgroup_usage_pages;
	__u64 cgroup_limit_pages; /* page_counter max (memory.max / memory.limit_in_bytes) */
	/* The memory cgroup whose limit was hit (valid with OOM_F_OOM_MEMCG). */
	__u64 oom_cgroup_id;
	__u64 oom_cgroup_usage_pages;
	__u64 oom_cgroup_limit_pages;
	/* From the killer's struct oom_control (valid with OOM_F_CONTROL). */
	__u64 gfp;
	__u64 totalpages; /* size of the OOM domain: the memcg's limit, or RAM + swap */
	__s32 order; /* -1: the OOM killer was invoked by sysrq (no allocation) */
	__u32 constraint; /* enum oom_constraint value of the running kernel */
	__u32 victim_pid; /* thread group id */
	__u32 victim_tid; /* the thread marked */
	__u32 victim_uid;
	__u32 trigger_pid;
	__u32 trigger_tid;
	__u32 flags; /* OOM_F_* */
	__s16 oom_score_adj;
	__u16 pad[3];
	char victim_comm[OOM_COMM_LEN];
	char trigger_comm[OOM_COMM_LEN];
	char cgroup[OOM_PATH_LEN];
	char oom_cgroup[OOM_PATH_LEN];
};

#endif
