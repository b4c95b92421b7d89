/* SPDX-License-Identifier: GPL-2.0 */
/* Unwind rows: an object's DWARF call-frame information (.eh_frame, .debug_frame)
 * compiled into a sorted table that a BPF program can binary-search. Shared by the
 * CFI compiler (src/memwatcher/_cfi_compiler.c), bpf/memleak.bpf.c and Python.
 *
 * x86-64 only: the return address is always at CFA - 8 (the compiler turns any
 * other return-address rule into UNWIND_CFA_UNSUPPORTED), the CFA is rsp or rbp
 * plus an offset, and rbp is the one callee-saved register the walk tracks. */
#ifndef MEMWATCHER_UNWIND_H
#define MEMWATCHER_UNWIND_H

/* How to find the canonical frame address (CFA) of the frame at a pc. */
#define UNWIND_CFA_NONE 0        /* no CFI covers the pc (a gap between FDEs) */
#define UNWIND_CFA_RSP 1         /* CFA = rsp + cfa_offset */
#define UNWIND_CFA_RBP 2         /* CFA = rbp + cfa_offset */
#define UNWIND_CFA_END 3         /* return address undefined: the outermost frame (_start, clone) */
#define UNWIND_CFA_UNSUPPORTED 4 /* CFA or return address given by an expression or another register */

/* Where the caller's rbp is. */
#define UNWIND_RBP_SAME 0        /* unchanged by this frame */
#define UNWIND_RBP_OFFSET 1      /* saved at CFA + rbp_offset */
#define UNWIND_RBP_UNSUPPORTED 2 /* in another register or by an expression: unknown to the caller */

/* One row holds from its pc up to the next row's pc. Rows are sorted by pc and
 * adjacent rows never repeat the same rule; the end of every FDE that is not
 * followed directly by another one gets an UNWIND_CFA_NONE row. */
struct unwind_row {
	__u32 pc;         /* ELF virtual address (objects whose code lies above 4 GiB are refused) */
	__s32 cfa_offset; /* bytes */
	__s16 rbp_offset; /* bytes, from the CFA */
	__u8 cfa_rule;    /* UNWIND_CFA_* */
	__u8 rbp_rule;    /* UNWIND_RBP_* */
};

/* One executable mapping of the traced process, in the `unwind_mappings` map. */
struct unwind_mapping {
	__u64 start;      /* first address of the mapping */
	__u64 end;        /* first address past it */
	__u64 bias;       /* ELF virtual address = address - bias */
	__u32 first_row;  /* the object's rows: unwind_rows[first_row, first_row + n_rows) */
	__u32 n_rows;     /* 0: no CFI loaded for this object (walk it with frame pointers) */
};

/* Most executable mappings one process can have in the table. The map holds two
 * halves of this size: user space fills the idle half, then switches. */
#define UNWIND_MAX_MAPPINGS 1024

/* The one entry of `unwind_live`: which half is live and how many mappings it has. */
struct unwind_live {
	__u32 half;        /* 0 or 1 */
	__u32 n_mappings;  /* sorted by start in unwind_mappings[half * UNWIND_MAX_MAPPINGS ...] */
};

#endif
