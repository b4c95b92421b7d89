// SPDX-License-Identifier: GPL-2.0
/* memleak: outstanding allocations by call stack.
 *
 * User space: uprobes/uretprobes on the target's allocator. Kernel: raw
 * tracepoints of the slab, page and percpu allocators. Both feed the same
 * maps: `allocs` (address -> size, time, stack id), `stacks` (stack id ->
 * frames) and `combined` (stack id -> outstanding bytes and allocations,
 * updated atomically, rows deleted when they reach zero). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "records.bpf.h"
#include "memleak.h"
#include "unwind.h"

#define EEXIST 17 /* errno, from uapi asm-generic/errno-base.h */

EXPORT_RECORD(memleak_alloc);
EXPORT_RECORD(memleak_combined);
EXPORT_RECORD(memleak_inflight);

/* Configuration, set by user space before load. */
const volatile __u32 target_tgid = 0;     /* 0: every process (kernel mode) */
const volatile __u64 min_size_bytes = 0;
const volatile __u64 max_size_bytes = ~0ULL;
const volatile __u32 sample_rate = 1;     /* record one allocation in N */
const volatile __u64 stack_flags = 0;     /* BPF_F_USER_STACK for user space */
const volatile __u64 page_size_bytes = 4096;
const volatile __u64 percpu_copies = 1;   /* possible CPUs: copies of a percpu area */
const volatile bool wa_missing_free = false;
const volatile bool dwarf_unwind = false; /* user stacks from CFI rows, not the kernel's frame-pointer walk */
const volatile __u32 dl_signal = 0;       /* sent at _dl_debug_state while the target is ptraced, 0: none */

/* Diagnostics: nothing is lost silently. */
__u64 lost_allocs = 0;    /* `allocs` full: allocation not tracked */
__u64 lost_stacks = 0;    /* `combined` full: per-stack totals incomplete */
__u64 stack_errors = 0;   /* bpf_get_stackid failed (`stacks` full or collision) */
__u64 lost_inflight = 0;  /* `inflight` full: an allocator call was missed */
__u64 missed_frees = 0;   /* address allocated twice without a free seen */
__u64 unwind_no_cfi = 0;       /* stacks where no CFI row covered a pc: walked on with frame pointers */
__u64 unwind_unsupported = 0;  /* stacks stopped at a CFI rule the walk cannot follow */
__u64 unwind_truncated = 0;    /* stacks cut at MEMLEAK_STACK_DEPTH frames */
__u64 unwind_read_errors = 0;  /* stacks stopped at stack memory that could not be read */
__u64 dl_updates = 0;          /* _dl_debug_state calls: the dynamic loader changed its link map */
__u64 target_execs = 0;        /* execve calls of the target (--pid): its old image's memory is gone */
__u64 target_exec_ns = 0;      /* bpf_ktime_get_ns() of the last one */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* sized by user space: MemleakOptions */
	__type(key, __u64);
	__type(value, struct memleak_alloc);
} allocs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* sized by user space: MemleakOptions */
	__type(key, __s64);
	__type(value, struct memleak_combined);
} combined SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1); /* sized by user space: MemleakOptions */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MEMLEAK_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* sized by user space: MemleakOptions */
	__type(key, __u32);
	__type(value, struct memleak_inflight);
} inflight SEC(".maps");

/* DWARF unwinding (user space): see bpf/unwind.h and src/memwatcher/unwinder.py. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* sized by user space */
	__type(key, __u32);
	__type(value, struct unwind_row);
} unwind_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * UNWIND_MAX_MAPPINGS);
	__type(key, __u32);
	__type(value, struct unwind_mapping);
} unwind_mappings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_live);
} unwind_live SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct memleak_ustack);
} ustack_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* sized by user space: MemleakOptions */
	__type(key, __s64);
	__type(value, struct memleak_ustack);
} ustacks SEC(".maps");

/* ------------------------------------------------------------ DWARF unwinding */

/* The two searches below are global functions: the verifier checks each once, on
 * its own, instead of once per frame of the walk that calls them. */

/* Index in unwind_mappings of the live mapping holding pc, or -1. */
__noinline int unwind_find_mapping(__u64 pc)
{
	struct unwind_mapping *m;
	struct unwind_live *st;
	__u32 zero = 0, lo = 0, hi, base, idx;

	st = bpf_map_lookup_elem(&unwind_live, &zero);
	if (!st || st->n_mappings > UNWIND_MAX_MAPPINGS)
		return -1;
	base = (st->half & 1) * UNWIND_MAX_MAPPINGS;
	hi = st->n_mappings;
	for (int i = 0; i < 12 && lo < hi; i++) { /* 2^11 > UNWIND_MAX_MAPPINGS */
		__u32 mid = lo + (hi - lo) / 2;

		idx = base + mid;
		m = bpf_map_lookup_elem(&unwind_mappings, &idx);
		if (!m)
			return -1;
		if (m->start <= pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	idx = base + lo - 1;
	m = bpf_map_lookup_elem(&unwind_mappings, &idx);
	if (!m || pc >= m->end)
		return -1;
	return idx;
}

/* Index of the last row in unwind_rows[first, first + n) whose pc <= elf_pc, or -1. */
__noinline int unwind_find_row(__u32 first, __u32 n, __u32 elf_pc)
{
	struct unwind_row *r;
	__u32 lo = first, hi = first + n, idx;

	for (int i = 0; i < 33 && lo < hi; i++) {
		__u32 mid = lo + (hi - lo) / 2;

		idx = mid;
		r = bpf_map_lookup_elem(&unwind_rows, &idx);
		if (!r)
			return -1;
		if (r->pc <= elf_pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == first)
		return -1;
	return lo - 1;
}

/* The CFI row for a return address, or NULL when no loaded CFI covers it.
 * `*mapping_idx` is the mapping of the previous frame (-1: none): most callers are
 * in the same object, no search then. */
static __always_inline struct unwind_row *unwind_row_of(__u64 pc, __s32 *mapping_idx)
{
	struct unwind_mapping *m = NULL;
	__u64 elf_pc;
	__u32 idx;
	int i;

	if (*mapping_idx >= 0) {
		idx = *mapping_idx;
		m = bpf_map_lookup_elem(&unwind_mappings, &idx);
	}
	if (!m || pc < m->start || pc >= m->end) {
		i = unwind_find_mapping(pc);
		*mapping_idx = i;
		if (i < 0)
			return NULL;
		idx = i;
		m = bpf_map_lookup_elem(&unwind_mappings, &idx);
	}
	if (!m || !m->n_rows)
		return NULL;
	/* A return address belongs to the call before it: look up pc - 1. */
	elf_pc = pc - 1 - m->bias;
	if (elf_pc > 0xffffffffULL)
		return NULL;
	i = unwind_find_row(m->first_row, m->n_rows, (__u32)elf_pc);
	if (i < 0)
		return NULL;
	idx = i;
	return bpf_map_lookup_elem(&unwind_rows, &idx);
}

#define FNV64_OFFSET 0xcbf29ce484222325ULL
#define FNV64_PRIME 0x100000001b3ULL

/* Where a walk is between frames (per CPU: a walk runs to its end in one probe). */
struct unwind_walk {
	__u64 pc, sp, bp, hash;
	__s32 mapping_idx;
	__u32 no_cfi;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_walk);
} unwind_walk SEC(".maps");

/* One frame of the walk: record frame n's pc in ustack_scratch, then find its
 * caller's pc, sp and rbp. 0: go on; 1: the stack ends (or cannot be followed).
 * A global function, verified once: inlined in a loop it was verified once per
 * frame and per allocating program, which made loading take seconds. */
__noinline int unwind_step(__u32 n)
{
	struct memleak_ustack *frames;
	struct unwind_walk *w;
	struct unwind_row *r;
	__u64 cfa, ra, rbp_at, bp;
	__u8 cfa_rule, rbp_rule;
	__u32 zero = 0;
	__u64 slot = n;

	/* Opaque to clang: the bound checked below is the one used to index, not a copy. */
	asm volatile("" : "+r"(slot));
	w = bpf_map_lookup_elem(&unwind_walk, &zero);
	frames = bpf_map_lookup_elem(&ustack_scratch, &zero);
	if (!w || !frames || slot >= MEMLEAK_STACK_DEPTH)
		return 1;
	frames->ips[slot] = w->pc;
	w->hash = (w->hash ^ w->pc) * FNV64_PRIME;
	r = unwind_row_of(w->pc, &w->mapping_idx);
	cfa_rule = r ? r->cfa_rule : UNWIND_CFA_NONE;
	bp = w->bp;
	if (cfa_rule == UNWIND_CFA_END)
		return 1;
	if (cfa_rule == UNWIND_CFA_NONE) {
		/* No CFI here: one frame-pointer step (rbp -> saved rbp, return address). */
		w->no_cfi = 1;
		if (!bp)
			return 1;
		cfa = bp + 16;
		rbp_rule = UNWIND_RBP_OFFSET;
		rbp_at = bp;
	} else if (r && (cfa_rule == UNWIND_CFA_RSP || (cfa_rule == UNWIND_CFA_RBP && bp))) {
		cfa = (cfa_rule == UNWIND_CFA_RSP ? w->sp : bp) + (__s64)r->cfa_offset;
		rbp_rule = r->rbp_rule;
		rbp_at = cfa + (__s64)r->rbp_offset;
	} else {
		__sync_fetch_and_add(&unwind_unsupported, 1);
		return 1;
	}
	if (bpf_probe_read_user(&ra, sizeof(ra), (void *)(cfa - 8)) ||
	    (rbp_rule == UNWIND_RBP_OFFSET && bpf_probe_read_user(&bp, sizeof(bp), (void *)rbp_at))) {
		/* An unreadable frame pointer is how such a chain ends: not an error. */
		if (cfa_rule != UNWIND_CFA_NONE)
			__sync_fetch_and_add(&unwind_read_errors, 1);
		return 1;
	}
	if (rbp_rule == UNWIND_RBP_UNSUPPORTED)
		bp = 0; /* unknown from here on */
	if (!ra)
		return 1;
	w->bp = bp;
	w->sp = cfa;
	w->pc = ra;
	return 0;
}

/* Walk the user stack from an allocator's return with the CFI rows and intern the
 * frames in `ustacks`; the id is a hash of the frames (>= 0) or a negative error. */
static __always_inline __s64 dwarf_stack_id(struct pt_regs *regs)
{
	struct memleak_ustack *frames;
	struct unwind_walk *w;
	__u32 zero = 0;
	__s64 id;
	/* int: before Linux 6.4 the map operations the JIT calls directly (hash maps)
	 * return a 32-bit int, so a long would hold -EEXIST as 0xffffffef. */
	int err;
	int n;

	w = bpf_map_lookup_elem(&unwind_walk, &zero);
	frames = bpf_map_lookup_elem(&ustack_scratch, &zero);
	if (!w || !frames)
		return -1;
	w->pc = PT_REGS_IP(regs);
	w->sp = PT_REGS_SP(regs);
	w->bp = PT_REGS_FP(regs);
	w->hash = FNV64_OFFSET;
	w->mapping_idx = -1;
	w->no_cfi = 0;
	for (n = 0; n < MEMLEAK_STACK_DEPTH; n++) {
		if (unwind_step(n))
			break;
	}
	/* Leaving by the loop condition (not a break) means a caller did not fit. The
	 * condition is also what keeps the loop's back-edge a conditional jump, which
	 * Linux 6.1's verifier requires (it refuses a fall-through back-edge). */
	if (n == MEMLEAK_STACK_DEPTH)
		__sync_fetch_and_add(&unwind_truncated, 1);
	else if (n < MEMLEAK_STACK_DEPTH - 1)
		frames->ips[n + 1] = 0;
	if (w->no_cfi)
		__sync_fetch_and_add(&unwind_no_cfi, 1);
	id = w->hash & 0x7fffffffffffffffULL;
	err = bpf_map_update_elem(&ustacks, &id, frames, BPF_NOEXIST);
	if (err && err != -EEXIST)
		return err;
	return id;
}

/* ------------------------------------------------------------ shared core */

static __always_inline bool wanted(__u64 size)
{
	if (size < min_size_bytes || size > max_size_bytes)
		return false;
	return sample_rate <= 1 || bpf_get_prandom_u32() % sample_rate == 0;
}

static __always_inline void combined_add(__s64 stack_id, __u64 size)
{
	struct memleak_combined *c, init = {
		.bytes = size, .allocs = 1, .allocated_bytes = size, .allocations = 1
	};

	c = bpf_map_lookup_elem(&combined, &stack_id);
	if (!c) {
		if (!bpf_map_update_elem(&combined, &stack_id, &init, BPF_NOEXIST))
			return;
		/* Another CPU created the row meanwhile, or the map is full. */
		c = bpf_map_lookup_elem(&combined, &stack_id);
		if (!c) {
			__sync_fetch_and_add(&lost_stacks, 1);
			return;
		}
	}
	__sync_fetch_and_add(&c->bytes, size);
	__sync_fetch_and_add(&c->allocs, 1);
	__sync_fetch_and_add(&c->allocated_bytes, size);
	__sync_fetch_and_add(&c->allocations, 1);
}

/* The row stays at zero outstanding: there are no more rows than stack ids,
 * which the stack map bounds already. */
static __always_inline void combined_sub(__s64 stack_id, __u64 size)
{
	struct memleak_combined *c = bpf_map_lookup_elem(&combined, &stack_id);

	if (!c)
		return;
	__sync_fetch_and_sub(&c->bytes, size);
	__sync_fetch_and_sub(&c->allocs, 1);
	__sync_fetch_and_add(&c->freed_bytes, size);
	__sync_fetch_and_add(&c->frees, 1);
}

static __always_inline void free_key(__u64 key)
{
	struct memleak_alloc *a = bpf_map_lookup_elem(&allocs, &key);
	__s64 stack_id;
	__u64 size;

	if (!a)
		return;
	stack_id = a->stack_id;
	size = a->size_bytes;
	/* Only the deleter accounts the free: two racing frees count once. */
	if (bpf_map_delete_elem(&allocs, &key) == 0)
		combined_sub(stack_id, size);
}

static __always_inline void record_alloc(void *ctx, __u64 key, __u64 size)
{
	struct memleak_alloc a = { .size_bytes = size, .ts_ns = bpf_ktime_get_ns() };
	/* int: before Linux 6.4 the map operations the JIT calls directly (hash maps)
	 * return a 32-bit int, so a long would hold -EEXIST as 0xffffffef. */
	int err;

	if (dwarf_unwind)
		a.stack_id = dwarf_stack_id(ctx);
	else
		a.stack_id = bpf_get_stackid(ctx, &stacks, stack_flags);
	if (a.stack_id < 0)
		__sync_fetch_and_add(&stack_errors, 1);
	/* Insert first: the common case costs one map operation. */
	err = bpf_map_update_elem(&allocs, &key, &a, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* Allocated again with no free seen (a free we cannot observe). */
		__sync_fetch_and_add(&missed_frees, 1);
		if (wa_missing_free)
			free_key(key);
		err = bpf_map_update_elem(&allocs, &key, &a, BPF_ANY);
	}
	if (err) {
		__sync_fetch_and_add(&lost_allocs, 1);
		return;
	}
	combined_add(a.stack_id, size);
}

/* ------------------------------------------------------------ user space */

static __always_inline bool is_target(__u32 *tid)
{
	__u64 id = bpf_get_current_pid_tgid();

	*tid = (__u32)id;
	return !target_tgid || (id >> 32) == target_tgid;
}

/* Entry of an allocating call; `old` (realloc, mremap) is freed here, before
 * the allocator can hand the same address to another thread. `counts`: false for
 * a call that allocates nothing (address space reserved with PROT_NONE). */
static __always_inline int alloc_enter(__u64 size, __u64 old, __u64 memptr, bool counts)
{
	struct memleak_inflight *f, n = {};
	__u32 tid;

	if (!is_target(&tid))
		return 0;
	f = bpf_map_lookup_elem(&inflight, &tid);
	if (f) {
		f->depth++; /* only this thread touches its entry */
		return 0;
	}
	if (old)
		free_key(old);
	n.size_bytes = size;
	n.memptr = memptr;
	n.depth = 1;
	n.record = counts && wanted(size);
	if (bpf_map_update_elem(&inflight, &tid, &n, BPF_ANY))
		__sync_fetch_and_add(&lost_inflight, 1);
	return 0;
}

/* Return of an allocating call with its result (0 or MAP_FAILED: none). */
static __always_inline int alloc_exit(void *ctx, __u64 address, bool via_memptr)
{
	struct memleak_inflight *f, n;
	__u32 tid;

	if (!is_target(&tid))
		return 0;
	f = bpf_map_lookup_elem(&inflight, &tid);
	if (!f)
		return 0;
	if (f->depth > 1) {
		f->depth--;
		return 0;
	}
	n = *f;
	bpf_map_delete_elem(&inflight, &tid);
	if (!n.record)
		return 0;
	if (via_memptr) {
		/* posix_memalign returns 0 on success and stores the pointer. */
		if (address != 0 || bpf_probe_read_user(&address, sizeof(address), (void *)n.memptr))
			return 0;
	}
	if (address == 0 || address == (__u64)-1)
		return 0;
	record_alloc(ctx, address, n.size_bytes);
	return 0;
}

/* free and munmap are calls like the others, closed by their return: what the allocator
 * does inside them belongs to them (glibc makes a thread's arena inside free() when
 * that is its first call). Nested in realloc & co., the outer call accounts for it. */
static __always_inline int free_enter(__u64 address)
{
	return alloc_enter(0, address, 0, false);
}

/* Entry of every allocator function; the attach cookie says which (memleak.h). */
SEC("uprobe")
int user_enter(struct pt_regs *ctx)
{
	__u64 a1 = PT_REGS_PARM1(ctx), a2 = PT_REGS_PARM2(ctx), a3 = PT_REGS_PARM3(ctx);

	switch (bpf_get_attach_cookie(ctx)) {
	case MEMLEAK_FN_MALLOC:
		return alloc_enter(a1, 0, 0, true);
	case MEMLEAK_FN_CALLOC:
		return alloc_enter(a1 * a2, 0, 0, true);
	case MEMLEAK_FN_REALLOC:
		return alloc_enter(a2, a1, 0, true);
	case MEMLEAK_FN_REALLOCARRAY:
		return alloc_enter(a2 * a3, a1, 0, true);
	case MEMLEAK_FN_POSIX_MEMALIGN:
		return alloc_enter(a3, 0, a1, true);
	case MEMLEAK_FN_ALIGNED:
		return alloc_enter(a2, 0, 0, true);
	case MEMLEAK_FN_MMAP:
		/* A PROT_NONE mapping reserves address space, no memory: glibc reserves
		 * each new arena's 64 MiB heap so, even inside free(). Still entered, so
		 * that its return is matched while nested in another call. */
		return alloc_enter(a2, 0, 0, a3 != MEMLEAK_PROT_NONE);
	case MEMLEAK_FN_MREMAP:
		return alloc_enter(a3, a1, 0, true);
	case MEMLEAK_FN_FREE:
		return free_enter(a1);
	}
	return 0;
}

/* Return of every function above. */
SEC("uretprobe")
int user_return(struct pt_regs *ctx)
{
	bool via_memptr = bpf_get_attach_cookie(ctx) == MEMLEAK_FN_POSIX_MEMALIGN;

	return alloc_exit(ctx, via_memptr ? (__u64)(int)PT_REGS_RC(ctx) : PT_REGS_RC(ctx), via_memptr);
}

/* The target replaced its program: what its old image had outstanding went with its
 * address space. User space forgets the allocations older than this (forget_alloc). */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(target_exec, struct task_struct *p)
{
	if (!target_tgid || BPF_CORE_READ(p, tgid) != target_tgid)
		return 0;
	target_exec_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(&target_execs, 1);
	return 0;
}

/* Run by user space (BPF_PROG_TEST_RUN, ctx[0] = the address) for each allocation an
 * exec left behind: the accounting of a free, atomic against the probes. */
SEC("raw_tp")
int forget_alloc(__u64 *ctx)
{
	free_key(ctx[0]);
	return 0;
}

/* ld.so calls _dl_debug_state after each change of its link map (start-up, dlopen,
 * dlclose): user space reloads the unwind tables when this count moves. A command
 * memwatcher started is still ptraced by it while ld.so maps the first libraries:
 * `dl_signal` then stops it (a signal-delivery stop its tracer suppresses) until
 * the tables cover them. */
SEC("uprobe")
int BPF_KPROBE(dl_debug_state)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tid;

	if (!is_target(&tid))
		return 0;
	__sync_fetch_and_add(&dl_updates, 1);
	if (dl_signal && BPF_CORE_READ(task, ptrace))
		bpf_send_signal_thread(dl_signal);
	return 0;
}

/* ------------------------------------------------------------ kernel */

static __always_inline int kernel_alloc(void *ctx, __u64 address, __u64 tag, __u64 size)
{
	__u32 tid;

	/* With a target, only allocations made in its context; frees from anywhere. */
	if (!address || !is_target(&tid) || !wanted(size))
		return 0;
	record_alloc(ctx, address | tag, size);
	return 0;
}

/* kmalloc: (call_site, ptr, bytes_req, bytes_alloc, ...) on every kernel
 * since 4.x; 6.1 appended `node` and removed kmalloc_node, which had the
 * same leading arguments. */
SEC("raw_tp/kmalloc")
int BPF_PROG(kmalloc, unsigned long call_site, const void *ptr, size_t bytes_req, size_t bytes_alloc)
{
	return kernel_alloc(ctx, (__u64)ptr, MEMLEAK_TAG_SLAB, bytes_alloc);
}

SEC("raw_tp/kmalloc_node")
int BPF_PROG(kmalloc_node, unsigned long call_site, const void *ptr, size_t bytes_req, size_t bytes_alloc)
{
	return kernel_alloc(ctx, (__u64)ptr, MEMLEAK_TAG_SLAB, bytes_alloc);
}

/* kmem_cache_alloc before 6.1: the kmem_alloc class, sizes as arguments. */
SEC("raw_tp/kmem_cache_alloc")
int BPF_PROG(kmem_cache_alloc_sizes, unsigned long call_site, const void *ptr, size_t bytes_req,
	     size_t bytes_alloc)
{
	return kernel_alloc(ctx, (__u64)ptr, MEMLEAK_TAG_SLAB, bytes_alloc);
}

SEC("raw_tp/kmem_cache_alloc_node")
int BPF_PROG(kmem_cache_alloc_node, unsigned long call_site, const void *ptr, size_t bytes_req,
	     size_t bytes_alloc)
{
	return kernel_alloc(ctx, (__u64)ptr, MEMLEAK_TAG_SLAB, bytes_alloc);
}

/* kmem_cache_alloc since 6.1 (commit 2c1d697fb8ba): (call_site, ptr,
 * struct kmem_cache *s, gfp_flags, node); the size is the cache's. */
SEC("raw_tp/kmem_cache_alloc")
int BPF_PROG(kmem_cache_alloc_cache, unsigned long call_site, const void *ptr, struct kmem_cache *s)
{
	return kernel_alloc(ctx, (__u64)ptr, MEMLEAK_TAG_SLAB, BPF_CORE_READ(s, size));
}

/* kfree (call_site, ptr) and kmem_cache_free (call_site, ptr[, name | s]):
 * the pointer is the second argument on every kernel. */
SEC("raw_tp/kfree")
int BPF_PROG(kfree, unsigned long call_site, const void *ptr)
{
	free_key((__u64)ptr | MEMLEAK_TAG_SLAB);
	return 0;
}

SEC("raw_tp/kmem_cache_free")
int BPF_PROG(kmem_cache_free, unsigned long call_site, const void *ptr)
{
	free_key((__u64)ptr | MEMLEAK_TAG_SLAB);
	return 0;
}

/* Pages are keyed by their struct page (one per pfn). */
SEC("raw_tp/mm_page_alloc")
int BPF_PROG(mm_page_alloc, struct page *page, unsigned int order)
{
	return kernel_alloc(ctx, (__u64)page, MEMLEAK_TAG_PAGE, page_size_bytes << order);
}

SEC("raw_tp/mm_page_free")
int BPF_PROG(mm_page_free, struct page *page)
{
	free_key((__u64)page | MEMLEAK_TAG_PAGE);
	return 0;
}

/* Order-0 pages freed in batches (release_pages and friends). */
SEC("raw_tp/mm_page_free_batched")
int BPF_PROG(mm_page_free_batched, struct page *page)
{
	free_key((__u64)page | MEMLEAK_TAG_PAGE);
	return 0;
}

/* percpu_alloc_percpu until 5.19: (reserved, is_atomic, size, align,
 * base_addr, off, ptr); one copy of `size` bytes per possible CPU. */
SEC("raw_tp/percpu_alloc_percpu")
int BPF_PROG(percpu_alloc_short, bool reserved, bool is_atomic, size_t size, size_t align, void *base_addr,
	     int off, void *ptr)
{
	return kernel_alloc(ctx, (__u64)ptr, MEMLEAK_TAG_PERCPU, size * percpu_copies);
}

/* Since 6.0 (commit f67bed134a05): (call_site, reserved, is_atomic, size,
 * align, base_addr, off, ptr, bytes_alloc, gfp_flags). */
SEC("raw_tp/percpu_alloc_percpu")
int BPF_PROG(percpu_alloc_call_site, unsigned long call_site, bool reserved, bool is_atomic, size_t size,
	     size_t align, void *base_addr, int off, void *ptr, size_t bytes_alloc)
{
	return kernel_alloc(ctx, (__u64)ptr, MEMLEAK_TAG_PERCPU, bytes_alloc);
}

SEC("raw_tp/percpu_free_percpu")
int BPF_PROG(percpu_free_percpu, void *base_addr, int off, void *ptr)
{
	free_key((__u64)ptr | MEMLEAK_TAG_PERCPU);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
