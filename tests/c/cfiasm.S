/*
 * Hand-written call-frame information for tests/test_cfi.py.
 *
 * Compilers use few of DWARF's CFA opcodes, augmentations and pointer
 * encodings; this file spells out the rest. The code is only nops (never run):
 * each "function" is a 64-byte slot, and .eh_frame / .debug_frame below
 * describe the slots with every rule the CFI compiler handles, plus entries it
 * must skip. Linked with -nostdlib -static -no-pie (absolute encodings need
 * final addresses); ld cannot parse some of the entries and copies
 * .eh_frame as written.
 *
 * DWARF registers: rbx 3, rbp 6, rsp 7, r10 10, return address 16.
 */

#define SLOT(name) .p2align 6; .globl name; .type name, @function; name: .fill 64, 1, 0x90

/* CFA opcodes */
#define ADV(n) .byte 0x40 + (n)
#define OFFSET(reg, n) .byte 0x80 + (reg), n
#define RESTORE(reg) .byte 0xc0 + (reg)
#define NOP .byte 0x00

	.text
SLOT(_start)
SLOT(f_frame)
SLOT(f_state)
SLOT(f_rules)
SLOT(f_setloc)
SLOT(f_empty)
SLOT(f_eh_aug)
SLOT(f_len64)
SLOT(f_pers)
SLOT(f_unknown_op)
SLOT(f_bad_cie)
SLOT(f_dbg)
SLOT(f_dbg_clip)
SLOT(f_eh_mid)
SLOT(f_dbg_split)
SLOT(f_dbg_split_eh)
SLOT(f_dbg_split_end)
SLOT(f_after_gap)
	.p2align 6
text_end:

	.data
pers_ref:
	.quad 0
lsda:
	.quad 0

	.section .eh_frame,"a",@progbits
	.p2align 3
/* CIE A: what GCC writes. "zR", FDE addresses pcrel|sdata4. */
cie_a:
	.long 1f - 0f
0:	.long 0
	.byte 1
	.asciz "zR"
	.uleb128 1
	.sleb128 -8
	.byte 16
	.uleb128 1
	.byte 0x1b
	.byte 0x0c, 7, 8	/* def_cfa rsp+8 */
	OFFSET(16, 1)		/* ra at cfa-8 */
	.balign 4, 0
1:
/* CIE END: the return address is undefined (like _start's). */
cie_end:
	.long 1f - 0f
0:	.long 0
	.byte 1
	.asciz "zR"
	.uleb128 1
	.sleb128 -8
	.byte 16
	.uleb128 1
	.byte 0x1b
	.byte 0x0c, 7, 8
	.byte 0x07, 16		/* undefined ra */
	.balign 4, 0
1:
/* _start: no instructions, the CIE's rules: END. */
	.long 1f - 0f
0:	.long 0b - cie_end
	.long _start - .
	.long 64
	.uleb128 0
	.balign 4, 0
1:
/* f_frame: push rbp; mov rsp, rbp; ...; leave (as -fno-omit-frame-pointer). */
	.long 1f - 0f
0:	.long 0b - cie_a
	.long f_frame - .
	.long 64
	.uleb128 0
	ADV(1)
	.byte 0x0e, 16		/* def_cfa_offset 16 */
	OFFSET(6, 2)		/* rbp at cfa-16 */
	ADV(3)
	.byte 0x0d, 6		/* def_cfa_register rbp */
	ADV(40)
	.byte 0x0c, 7, 8	/* def_cfa rsp+8 */
	.balign 4, 0
1:
/* f_state: remember/restore_state, advance_loc1/2/4, GNU_args_size, nop. */
	.long 1f - 0f
0:	.long 0b - cie_a
	.long f_state - .
	.long 64
	.uleb128 0
	ADV(1)
	.byte 0x0e, 16
	OFFSET(6, 2)
	.byte 0x0a		/* remember_state */
	.byte 0x02, 10		/* advance_loc1 10 -> +11 */
	.byte 0x0e, 8
	RESTORE(6)
	.byte 0x03, 5, 0	/* advance_loc2 5 -> +16 */
	.byte 0x0b		/* restore_state: rsp+16, rbp c-16 */
	.byte 0x2e, 16		/* GNU_args_size */
	.byte 0x04, 4, 0, 0, 0	/* advance_loc4 4 -> +20 */
	.byte 0x0e, 32
	NOP
	ADV(0)			/* no-op advance */
	.balign 4, 0
1:
/* f_rules: CIE B ("zRS", version 3, absolute udata8 FDE addresses), every rule. */
cie_b:
	.long 1f - 0f
0:	.long 0
	.byte 3
	.asciz "zRS"
	.uleb128 1
	.sleb128 -8
	.uleb128 16
	.uleb128 1
	.byte 0x04		/* udata8 */
	.byte 0x0c, 7, 8
	OFFSET(16, 1)
	.balign 4, 0
1:
	.long 1f - 0f
0:	.long 0b - cie_b
	.quad f_rules
	.quad 64
	.uleb128 0
	.byte 0x12, 7, 0x7e	/* +0  def_cfa_sf rsp, -2*-8 = 16 */
	ADV(2)
	.byte 0x13, 0x7d	/* +2  def_cfa_offset_sf -3*-8 = 24 */
	.byte 0x11, 6, 0x7c	/*     offset_extended_sf rbp, -4*-8: c+32 */
	ADV(2)
	.byte 0x14, 6, 2	/* +4  val_offset rbp: unsupported */
	ADV(2)
	.byte 0x15, 6, 0x7f	/* +6  val_offset_sf rbp: unsupported */
	ADV(2)
	RESTORE(6)		/* +8  back to the CIE's (unspecified): same */
	.byte 0x05, 6, 3	/*     offset_extended rbp: c-24 */
	ADV(2)
	.byte 0x06, 6		/* +10 restore_extended rbp: same */
	ADV(2)
	.byte 0x2f, 6, 2	/* +12 GNU_negative_offset_extended rbp: c+16 */
	ADV(2)
	.byte 0x08, 6		/* +14 same_value rbp */
	ADV(2)
	.byte 0x09, 6, 3	/* +16 register rbp in rbx: unsupported */
	ADV(2)
	.byte 0x07, 6		/* +18 undefined rbp: same */
	ADV(2)
	.byte 0x10, 6, 2, 0x76, 0x00	/* +20 expression rbp: unsupported */
	ADV(2)
	.byte 0x16, 6, 2, 0x76, 0x00	/* +22 val_expression rbp: unsupported */
	ADV(2)
	.byte 0x08, 6
	.byte 0x0f, 2, 0x77, 0x08	/* +24 def_cfa_expression: unsupported */
	ADV(2)
	.byte 0x0c, 6, 16	/* +26 def_cfa rbp+16 */
	ADV(2)
	.byte 0x0d, 10		/* +28 def_cfa_register r10: unsupported */
	ADV(2)
	.byte 0x0c, 7, 0x80, 0x80, 0x80, 0x80, 0x08	/* +30 def_cfa rsp+2^31: unsupported */
	ADV(2)
	.byte 0x0c, 7, 8	/* +32 def_cfa rsp+8 */
	.byte 0x05, 6, 0x88, 0x27	/* offset_extended rbp 5000*-8: beyond s16, unsupported */
	ADV(2)
	OFFSET(6, 2)		/* +34 rbp c-16 */
	OFFSET(16, 2)		/*     ra at cfa-16: unsupported */
	ADV(2)
	OFFSET(16, 1)		/* +36 ra back at cfa-8 */
	ADV(2)
	.byte 0x07, 16		/* +38 undefined ra: END */
	ADV(2)
	.byte 0x06, 16		/* +40 restore_extended ra: cfa-8 */
	ADV(2)
	.byte 0x08, 16		/* +42 same_value ra: unsupported */
	ADV(2)
	OFFSET(16, 1)		/* +44 */
	ADV(2)
	.byte 0x09, 7, 3	/* +46 register rsp in rbx: the caller's rsp is not the CFA, unsupported */
	ADV(2)
	.byte 0x14, 7, 0	/* +48 val_offset rsp 0: rsp = CFA again */
	.balign 4, 0
1:
/* f_setloc: set_loc (pcrel sdata4), an advance past the FDE's end. */
	.long 1f - 0f
0:	.long 0b - cie_a
	.long f_setloc - .
	.long 32		/* the slot's second half is a gap */
	.uleb128 0
	.byte 0x01
	.long f_setloc + 10 - .	/* set_loc +10 */
	.byte 0x0e, 16
	.byte 0x01
	.long f_setloc + 20 - .	/* set_loc +20 */
	.byte 0x0e, 24
	ADV(63)			/* beyond the end: ignored */
	.byte 0x0e, 40
	.balign 4, 0
1:
/* f_empty: no instructions: the CIE's rules. */
	.long 1f - 0f
0:	.long 0b - cie_a
	.long f_empty - .
	.long 64
	.uleb128 0
	.balign 4, 0
1:
	.long 0			/* a zero terminator in the middle: padding, reading goes on */
/* f_eh_aug: CIE C with the ancient "eh" augmentation (an eh_ptr word, FDE addresses absptr). */
cie_c:
	.long 1f - 0f
0:	.long 0
	.byte 1
	.asciz "eh"
	.quad 0
	.uleb128 1
	.sleb128 -8
	.byte 16
	.byte 0x0c, 7, 8
	OFFSET(16, 1)
	.balign 4, 0
1:
	.long 1f - 0f
0:	.long 0b - cie_c
	.quad f_eh_aug
	.quad 64
	ADV(4)
	.byte 0x0e, 16
	.balign 4, 0
1:
/* f_len64: CIE D and its FDE with 64-bit lengths, pcrel|sdata8. In .eh_frame the CIE
 * id and pointer stay 4 bytes (LSB); readelf 2.40 reads 8 and misreads these two. */
	.p2align 3
cie_d:
	.long 0xffffffff
	.quad 1f - 0f
0:	.long 0
	.byte 1
	.asciz "zR"
	.uleb128 1
	.sleb128 -8
	.byte 16
	.uleb128 1
	.byte 0x1c
	.byte 0x0c, 7, 8
	OFFSET(16, 1)
	.balign 4, 0
1:
	.long 0xffffffff
	.quad 1f - 0f
0:	.long 0b - cie_d
	.quad f_len64 - .
	.quad 64
	.uleb128 0
	ADV(8)
	.byte 0x0e, 48
	.balign 4, 0
1:
/* f_pers: CIE E "zPLR", personality indirect|pcrel|sdata4, LSDA and FDE pcrel|sdata4. */
cie_e:
	.long 1f - 0f
0:	.long 0
	.byte 1
	.asciz "zPLR"
	.uleb128 1
	.sleb128 -8
	.byte 16
	.uleb128 7
	.byte 0x9b
	.long pers_ref - .
	.byte 0x1b
	.byte 0x1b
	.byte 0x0c, 7, 8
	OFFSET(16, 1)
	.balign 4, 0
1:
	.long 1f - 0f
0:	.long 0b - cie_e
	.long f_pers - .
	.long 64
	.uleb128 4
	.long lsda - .
	ADV(1)
	.byte 0x0e, 16
	.balign 4, 0
1:
/* Overlaps f_frame: dropped and counted. */
	.long 1f - 0f
0:	.long 0b - cie_a
	.long f_frame + 8 - .
	.long 16
	.uleb128 0
	.byte 0x0e, 64
	.balign 4, 0
1:
/* f_unknown_op: DW_CFA_GNU_window_save (SPARC): skipped and counted. */
	.long 1f - 0f
0:	.long 0b - cie_a
	.long f_unknown_op - .
	.long 64
	.uleb128 0
	ADV(1)
	.byte 0x2d
	.balign 4, 0
1:
/* f_bad_cie: the CIE pointer lands inside CIE A: skipped and counted. */
	.long 1f - 0f
0:	.long 0b - cie_a - 4
	.long f_bad_cie - .
	.long 64
	.uleb128 0
	.balign 4, 0
1:
/* f_eh_mid: .eh_frame covers the middle slot of f_dbg_split's three. */
	.long 1f - 0f
0:	.long 0b - cie_a
	.long f_dbg_split_eh - .
	.long 64
	.uleb128 0
	ADV(2)
	.byte 0x0e, 16
	.balign 4, 0
1:
/* f_dbg_clip's neighbour in .eh_frame (f_eh_mid), so f_dbg_clip's .debug_frame FDE is clipped. */
	.long 1f - 0f
0:	.long 0b - cie_a
	.long f_eh_mid - .
	.long 64
	.uleb128 0
	.balign 4, 0
1:
/* f_after_gap: directly after the last .debug_frame piece (no NONE row between them). */
	.long 1f - 0f
0:	.long 0b - cie_a
	.long f_after_gap - .
	.long 64
	.uleb128 0
	ADV(5)
	.byte 0x0e, 16
	.balign 4, 0
1:
	.long 0

	.section .debug_frame,"",@progbits
dframe:
/* Version 4 CIE: address and segment selector sizes. */
dcie:
	.long 1f - 0f
0:	.long 0xffffffff
	.byte 4
	.asciz ""
	.byte 8
	.byte 0
	.uleb128 1
	.sleb128 -8
	.uleb128 16
	.byte 0x0c, 7, 8
	OFFSET(16, 1)
	.balign 4, 0
1:
/* f_dbg: only .debug_frame covers it. */
	.long 1f - 0f
0:	.long dcie - dframe
	.quad f_dbg
	.quad 64
	ADV(3)
	.byte 0x0e, 16
	.balign 4, 0
1:
/* f_frame and f_state again: .eh_frame covers them, this is not used. */
	.long 1f - 0f
0:	.long dcie - dframe
	.quad f_frame
	.quad 128
	.byte 0x0e, 80
	.balign 4, 0
1:
/* f_dbg_clip and f_eh_mid: only the first slot is .debug_frame's. */
	.long 1f - 0f
0:	.long dcie - dframe
	.quad f_dbg_clip
	.quad 128
	ADV(4)
	.byte 0x0e, 24
	ADV(63)
	ADV(10)			/* f_eh_mid + 13 */
	.byte 0x0e, 96
	.balign 4, 0
1:
/* Overlaps the previous one: dropped and counted. */
	.long 1f - 0f
0:	.long dcie - dframe
	.quad f_dbg_clip + 32
	.quad 8
	.balign 4, 0
1:
/* f_dbg_split .. f_dbg_split_end: .eh_frame has the middle slot; two pieces are .debug_frame's. */
	.long 1f - 0f
0:	.long dcie - dframe
	.quad f_dbg_split
	.quad 192
	ADV(10)
	.byte 0x0e, 16		/* f_dbg_split + 10 */
	ADV(63)
	ADV(1)
	.byte 0x0e, 32		/* f_dbg_split_eh + 10: in force where the second piece starts */
	ADV(63)
	ADV(1)
	.byte 0x0e, 40		/* f_dbg_split_end + 10 */
	.balign 4, 0
1:
/* A discarded function: initial location 0. Ignored, not counted. */
	.long 1f - 0f
0:	.long dcie - dframe
	.quad 0
	.quad 64
	.balign 4, 0
1:
