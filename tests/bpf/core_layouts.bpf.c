// SPDX-License-Identifier: GPL-2.0
/* CO-RE accesses that memwatcher.corecheck must judge as the verifier does:
 * a field no kernel has, read unguarded and guarded; a field read through
 * another layout when the usual one exists; an fentry on a function no
 * kernel has. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

struct task_struct___absent {
	int memwatcher_no_such_field;
} __attribute__((preserve_access_index));

/* pid as an array: no kernel's task_struct matches this layout. */
struct task_struct___pid_array {
	char pid[3];
} __attribute__((preserve_access_index));

__u64 sink = 0;

SEC("raw_tp/sched_switch")
int unguarded(void *ctx)
{
	struct task_struct___absent *task = (void *)bpf_get_current_task();

	sink = BPF_CORE_READ(task, memwatcher_no_such_field);
	return 0;
}

SEC("raw_tp/sched_switch")
int guarded(void *ctx)
{
	struct task_struct___absent *task = (void *)bpf_get_current_task();

	if (bpf_core_field_exists(task->memwatcher_no_such_field))
		sink = BPF_CORE_READ(task, memwatcher_no_such_field);
	return 0;
}

SEC("raw_tp/sched_switch")
int alternative(void *ctx)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct task_struct___pid_array *other = (void *)task;

	if (bpf_core_field_exists(task->pid))
		sink = BPF_CORE_READ(task, pid);
	else
		sink = BPF_CORE_READ(other, pid[0]);
	return 0;
}

SEC("fentry/memwatcher_no_such_function")
int BPF_PROG(missing_hook)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
