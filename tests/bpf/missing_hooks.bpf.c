// SPDX-License-Identifier: GPL-2.0
/* Programs for hooks no kernel has: they load, and attaching them fails. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("raw_tp/memwatcher_no_such_tracepoint")
int no_such_tracepoint(void *ctx)
{
	return 0;
}

SEC("kprobe/memwatcher_no_such_function")
int no_such_function(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
