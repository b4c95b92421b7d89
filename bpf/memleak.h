/* SPDX-License-Identifier: GPL-2.0 */
/* Records of the memleak report, shared by bpf/memleak.bpf.c and Python. */
#ifndef MEMWATCHER_MEMLEAK_H
#define MEMWATCHER_MEMLEAK_H

/* Frames kept per stack (the kernel's PERF_MAX_STACK_DEPTH). */
#define MEMLEAK_STACK_DEPTH 127

/* Low two bits of a kernel key say what the address is: slab objects are at
 * least 8-aligned, struct page pointers 64-aligned, percpu pointers 4-aligned,
 * so the tag never collides with an address bit. */
#define MEMLEAK_TAG_SLAB 0
#define MEMLEAK_TAG_PAGE 1
#define MEMLEAK_TAG_PERCPU 2
#define MEMLEAK_TAG_MASK 3

/* Attach cookie of each allocator probe: which function, so one program serves all
 * (one uprobe_multi link for every entry, one for every return). Functions whose
 * arguments sit in the same places share a value (memleak.USER_FUNCTIONS). */
#define MEMLEAK_FN_MALLOC 1          /* malloc, valloc, pvalloc: (size) */
#define MEMLEAK_FN_CALLOC 2          /* (nmemb, size) */
#define MEMLEAK_FN_REALLOC 3         /* (ptr, size) */
#define MEMLEAK_FN_REALLOCARRAY 4    /* (ptr, nmemb, size) */
#define MEMLEAK_FN_POSIX_MEMALIGN 5  /* (memptr, alignment, size), returns 0 and stores the pointer */
#define MEMLEAK_FN_ALIGNED 6         /* aligned_alloc, memalign: (alignment, size) */
#define MEMLEAK_FN_MMAP 7            /* (addr, length, ...) */
#define MEMLEAK_FN_MREMAP 8          /* (old_address, old_size, new_size, ...) */
#define MEMLEAK_FN_FREE 9            /* free, munmap: (address, ...) */

/* mmap's prot for an inaccessible mapping (include/uapi/asm-generic/mman-common.h). */
#define MEMLEAK_PROT_NONE 0

/* Value of the `allocs` map, keyed by address (kernel: address | tag). */
struct memleak_alloc {
	__u64 size_bytes;
	__u64 ts_ns;      /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) at allocation */
	__s64 stack_id;   /* id in `stacks`, negative: the stack was not recorded */
};

/* Value of the `combined` map, keyed by stack id (__s64). A row stays when
 * nothing is outstanding: its totals since tracing began are kept. */
struct memleak_combined {
	__u64 bytes;           /* outstanding bytes from this stack */
	__u64 allocs;          /* outstanding allocations from this stack */
	__u64 allocated_bytes; /* allocated from this stack since tracing began */
	__u64 allocations;
	__u64 freed_bytes;     /* of those, freed */
	__u64 frees;
};

/* Value of the `inflight` map, keyed by thread id: an allocator call between
 * its entry and its return. Nested calls (realloc calling malloc) only count
 * the outermost one. */
struct memleak_inflight {
	__u64 size_bytes;
	__u64 memptr;     /* posix_memalign: where the result is stored */
	__u32 depth;      /* allocator calls of this thread on the stack */
	__u32 record;     /* 1: sampled and within the size limits */
};

/* Value of the `ustacks` map (DWARF unwinding), keyed by the stack id, a hash of the
 * frames: return addresses, innermost first, ended by a 0 when shorter than the array. */
struct memleak_ustack {
	__u64 ips[MEMLEAK_STACK_DEPTH];
};

#endif
