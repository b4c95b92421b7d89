// SPDX-License-Identifier: GPL-2.0
/* A program the verifier must reject: it reads far past its context. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

__u64 sink = 0;

SEC("raw_tp/sched_switch")
int out_of_bounds(__u64 *ctx)
{
	sink = ctx[4096];
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
