/* SPDX-License-Identifier: GPL-2.0 */
/* DWARF call-frame information (CFI) compiler for x86-64 ELF objects.
 *
 * Reads .eh_frame and .debug_frame from an ELF file (by path or by file
 * descriptor), runs every FDE's CFA program and writes the rules memleak's BPF
 * unwinder understands into a table of struct unwind_row (bpf/unwind.h),
 * sorted by pc. Compiled into the cffi module memwatcher._cfi; the Python side
 * is memwatcher/cfi.py.
 *
 * Only a few things are tracked per pc: the CFA rule, the caller's rbp (DWARF
 * register 6), the return-address column, and whether rsp (7) has a rule of
 * its own (the caller's rsp must be the CFA). Everything read from the file is
 * bounds-checked: malformed input gives an error string or a skipped FDE,
 * never a crash. Sections are read with pread() into private buffers, so a
 * file that shrinks while we read it gives a short read, not SIGBUS.
 *
 * References: DWARF 5 section 6.4 (call frame information), the LSB's
 * description of .eh_frame (augmentations and DW_EH_PE_* pointer encodings). */

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/types.h> /* the __u32 & co. that unwind.h uses, as the BPF side has them */
#include "unwind.h"

/* ---- public interface (mirrored in _cfi_build.py's cdef) ---------------- */

#define CFI_SECTION_EH_FRAME 1
#define CFI_SECTION_DEBUG_FRAME 2

struct cfi_result {
	struct unwind_row *rows; /* malloc'ed, sorted by pc; free with cfi_result_free() */
	size_t nrows;
	uint64_t low_pc;         /* lowest address covered by a kept FDE */
	uint64_t high_pc;        /* end (exclusive) of the highest kept FDE */
	uint32_t fde_count;      /* FDEs that contributed rows */
	uint32_t skipped_fdes;   /* FDEs dropped: overlaps, unsupported encodings or opcodes, malformed */
	uint32_t sections;       /* CFI_SECTION_* that were read */
	char error[256];         /* set when a call returns -1 */
};

int cfi_compile_fd(int fd, struct cfi_result *res);
int cfi_compile_path(const char *path, struct cfi_result *res);
void cfi_result_free(struct cfi_result *res);

/* ---- DWARF constants ------------------------------------------------------ */

enum {
	CFA_nop = 0x00,
	CFA_set_loc = 0x01,
	CFA_advance_loc1 = 0x02,
	CFA_advance_loc2 = 0x03,
	CFA_advance_loc4 = 0x04,
	CFA_offset_extended = 0x05,
	CFA_restore_extended = 0x06,
	CFA_undefined = 0x07,
	CFA_same_value = 0x08,
	CFA_register = 0x09,
	CFA_remember_state = 0x0a,
	CFA_restore_state = 0x0b,
	CFA_def_cfa = 0x0c,
	CFA_def_cfa_register = 0x0d,
	CFA_def_cfa_offset = 0x0e,
	CFA_def_cfa_expression = 0x0f,
	CFA_expression = 0x10,
	CFA_offset_extended_sf = 0x11,
	CFA_def_cfa_sf = 0x12,
	CFA_def_cfa_offset_sf = 0x13,
	CFA_val_offset = 0x14,
	CFA_val_offset_sf = 0x15,
	CFA_val_expression = 0x16,
	CFA_MIPS_advance_loc8 = 0x1d,
	CFA_GNU_args_size = 0x2e,
	CFA_GNU_negative_offset_extended = 0x2f,
	/* high two bits */
	CFA_advance_loc = 0x1,
	CFA_offset = 0x2,
	CFA_restore = 0x3,
};

enum {
	PE_absptr = 0x00,
	PE_uleb128 = 0x01,
	PE_udata2 = 0x02,
	PE_udata4 = 0x03,
	PE_udata8 = 0x04,
	PE_signed = 0x08,
	PE_sleb128 = 0x09,
	PE_sdata2 = 0x0a,
	PE_sdata4 = 0x0b,
	PE_sdata8 = 0x0c,
	PE_pcrel = 0x10,
	PE_textrel = 0x20,
	PE_datarel = 0x30,
	PE_funcrel = 0x40,
	PE_aligned = 0x50,
	PE_indirect = 0x80,
	PE_omit = 0xff,
};

#define REG_RBP 6
#define REG_RSP 7
#define STATE_STACK_MAX 16
#define ROW_PC_MAX 0xffffffffULL

/* ---- growable arrays ------------------------------------------------------ */

static int grow(void **buf, size_t *cap, size_t need, size_t item)
{
	size_t ncap;
	void *p;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap : 64;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2 / item)
			return -1;
		ncap *= 2;
	}
	p = realloc(*buf, ncap * item);
	if (!p)
		return -1;
	*buf = p;
	*cap = ncap;
	return 0;
}

/* ---- byte cursor: every read is bounds-checked ------------------------------ */

struct cur {
	const uint8_t *p, *end;
	int bad; /* a read ran past end (sticky) */
};

static uint64_t rd_u(struct cur *c, unsigned n)
{
	uint64_t v = 0;

	if (c->bad || (size_t)(c->end - c->p) < n) {
		c->bad = 1;
		return 0;
	}
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)c->p[i] << (8 * i);
	c->p += n;
	return v;
}

static int64_t rd_s(struct cur *c, unsigned n)
{
	uint64_t v = rd_u(c, n);

	if (n < 8 && (v >> (8 * n - 1)) & 1)
		v |= ~0ULL << (8 * n);
	return (int64_t)v;
}

static uint64_t rd_uleb(struct cur *c)
{
	uint64_t v = 0;
	unsigned shift = 0;
	uint8_t b;

	do {
		if (c->bad || c->p >= c->end) {
			c->bad = 1;
			return 0;
		}
		b = *c->p++;
		if (shift < 64) {
			uint64_t part = b & 0x7f;

			if (shift > 57 && (part >> (64 - shift)))
				c->bad = 1; /* does not fit in 64 bits */
			v |= part << shift;
		} else if (b & 0x7f) {
			c->bad = 1;
		}
		shift += 7;
	} while (b & 0x80);
	return c->bad ? 0 : v;
}

static int64_t rd_sleb(struct cur *c)
{
	uint64_t v = 0;
	unsigned shift = 0;
	uint8_t b;

	do {
		if (c->bad || c->p >= c->end) {
			c->bad = 1;
			return 0;
		}
		b = *c->p++;
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
	} while (b & 0x80);
	if (shift < 64 && (b & 0x40))
		v |= ~0ULL << shift;
	return (int64_t)v;
}

static void skip(struct cur *c, uint64_t n)
{
	if (c->bad || (uint64_t)(c->end - c->p) < n)
		c->bad = 1;
	else
		c->p += n;
}

/* A NUL-terminated string inside the cursor's range, or NULL. */
static const char *rd_str(struct cur *c)
{
	const uint8_t *nul;

	if (c->bad || c->p >= c->end || !(nul = memchr(c->p, 0, (size_t)(c->end - c->p)))) {
		c->bad = 1;
		return NULL;
	}
	const char *s = (const char *)c->p;
	c->p = nul + 1;
	return s;
}

/* Saturating a * b: any product beyond the int32 range is unsupported by the
 * row format anyway, so saturation never changes a row. */
static int64_t smul(int64_t a, int64_t b)
{
	int64_t r;

	if (__builtin_mul_overflow(a, b, &r))
		return (a < 0) != (b < 0) ? INT64_MIN : INT64_MAX;
	return r;
}

static int64_t u2s(uint64_t v)
{
	return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* ---- state of one compilation --------------------------------------------- */

struct section {
	const char *name;
	uint8_t *data; /* private copy of the section contents */
	uint64_t size;
	uint64_t addr; /* sh_addr: base of DW_EH_PE_pcrel */
	int is_eh;     /* .eh_frame (CIE id 0, relative CIE pointers) vs .debug_frame */
	int present;
};

enum rule_how {
	RULE_UNSPEC,
	RULE_UNDEF,
	RULE_SAME,
	RULE_OFFSET, /* saved at CFA + off */
	RULE_VAL_OFFSET,
	RULE_REGISTER,
	RULE_EXPR,
	RULE_VAL_EXPR,
};

struct rule {
	uint8_t how;
	int64_t off; /* bytes, factored already */
};

struct fstate {
	int cfa_expr;     /* CFA given by DW_CFA_def_cfa_expression */
	uint64_t cfa_reg; /* DWARF register number */
	int64_t cfa_off;  /* bytes */
	struct rule rbp, ra;
	struct rule rsp; /* unspecified means the usual: the caller's rsp is the CFA */
};

struct cie {
	uint64_t offset; /* of the entry, within its section */
	int ok;          /* parsed and its initial instructions ran */
	uint64_t caf;    /* code alignment factor */
	int64_t daf;     /* data alignment factor */
	uint64_t ra_reg;
	uint8_t fde_enc; /* DW_EH_PE_* of FDE addresses */
	uint8_t addr_size;
	int has_z;       /* FDEs carry augmentation data */
	struct fstate init;
};

struct fde_rec {
	uint64_t start, end;   /* [start, end) */
	size_t row_begin;      /* its rows in ctx.rows */
	size_t row_count;
	uint32_t order;        /* position in the file, for stable sorting */
	uint8_t from_eh;
};

struct window {
	uint64_t start, end;
	size_t fde;
};

struct ctx {
	struct cfi_result *res;
	uint64_t text_addr, got_addr;
	int have_text, have_got;
	struct cie *cies;
	size_t ncies, cies_cap;
	struct unwind_row *rows; /* every FDE's rows, FDE after FDE */
	size_t nrows, rows_cap;
	struct fde_rec *fdes;
	size_t nfdes, fdes_cap;
	uint32_t skipped;
};

static int fail(struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct ctx *x, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(x->res->error, sizeof(x->res->error), fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- pointer encodings ------------------------------------------------------ */

/* Reads a DW_EH_PE_* encoded value of a section at the cursor. Returns 0, or
 * -1 when the encoding is unsupported (or truncated: c->bad). "apply" = 0
 * reads the bare value (address ranges are never relative). The indirect bit is
 * left to the caller. */
static int rd_encoded(struct cur *c, uint8_t enc, const struct section *s, const struct ctx *x, int apply,
		      uint64_t *out)
{
	uint64_t field, v;

	if (enc == PE_omit)
		return -1;
	if ((enc & 0x70) == PE_aligned) {
		uint64_t pos = s->addr + (uint64_t)(c->p - s->data);

		skip(c, (8 - pos % 8) % 8);
		enc = PE_absptr;
	}
	field = s->addr + (uint64_t)(c->p - s->data);
	switch (enc & 0x0f) {
	case PE_absptr:
	case PE_udata8:
		v = rd_u(c, 8);
		break;
	case PE_uleb128:
		v = rd_uleb(c);
		break;
	case PE_udata2:
		v = rd_u(c, 2);
		break;
	case PE_udata4:
		v = rd_u(c, 4);
		break;
	case PE_signed:
	case PE_sdata8:
		v = (uint64_t)rd_s(c, 8);
		break;
	case PE_sleb128:
		v = (uint64_t)rd_sleb(c);
		break;
	case PE_sdata2:
		v = (uint64_t)rd_s(c, 2);
		break;
	case PE_sdata4:
		v = (uint64_t)rd_s(c, 4);
		break;
	default:
		return -1;
	}
	if (c->bad)
		return -1;
	if (apply) {
		switch (enc & 0x70) {
		case PE_absptr:
			break;
		case PE_pcrel:
			if (!s->is_eh) /* .debug_frame has no load address */
				return -1;
			v += field;
			break;
		case PE_textrel:
			if (!x->have_text)
				return -1;
			v += x->text_addr;
			break;
		case PE_datarel:
			if (!x->have_got)
				return -1;
			v += x->got_addr;
			break;
		default:
			return -1;
		}
	}
	*out = v;
	return 0;
}

/* ---- CFA programs ------------------------------------------------------------ */

struct interp {
	struct ctx *x;
	const struct section *s;
	const struct cie *cie;
	const struct fstate *init; /* CIE state for DW_CFA_restore; NULL inside the CIE */
	struct fstate st;
	struct fstate stack[STATE_STACK_MAX];
	unsigned depth;
	int emit;               /* 0 while running a CIE's initial instructions */
	uint64_t loc;           /* where the current state starts to hold */
	uint64_t end;           /* end of the FDE */
	size_t first_row;       /* the FDE's first row in x->rows */
};

/* Everything but the state stack, which is written before it is read. */
static void interp_init(struct interp *it, struct ctx *x, const struct section *s, const struct cie *cie)
{
	it->x = x;
	it->s = s;
	it->cie = cie;
	it->init = NULL;
	memset(&it->st, 0, sizeof(it->st));
	it->st.rbp.how = RULE_UNSPEC;
	it->st.ra.how = RULE_UNSPEC;
	it->st.rsp.how = RULE_UNSPEC;
	it->depth = 0;
	it->emit = 0;
	it->loc = it->end = 0;
	it->first_row = 0;
}

/* The tracked rule of a register in a state, or NULL for untracked ones. */
static struct rule *column(struct fstate *st, uint64_t reg, uint64_t ra_reg)
{
	if (reg == ra_reg)
		return &st->ra;
	if (reg == REG_RBP)
		return &st->rbp;
	if (reg == REG_RSP)
		return &st->rsp;
	return NULL;
}

static void set_rule(struct interp *it, uint64_t reg, uint8_t how, int64_t off)
{
	struct rule *r = column(&it->st, reg, it->cie->ra_reg);

	if (r) {
		r->how = how;
		r->off = off;
	}
}

static void restore_rule(struct interp *it, uint64_t reg)
{
	struct rule *r = column(&it->st, reg, it->cie->ra_reg);
	struct fstate init;

	if (!r)
		return;
	if (!it->init) {
		r->how = RULE_UNSPEC;
		r->off = 0;
	} else {
		init = *it->init;
		*r = *column(&init, reg, it->cie->ra_reg);
	}
}

/* The row a state stands for. Rows that give no CFA (END, UNSUPPORTED) carry
 * no rbp rule, so equal rows compare equal field by field. */
static void state_row(const struct fstate *st, uint32_t pc, struct unwind_row *row)
{
	memset(row, 0, sizeof(*row));
	row->pc = pc;
	row->cfa_rule = UNWIND_CFA_UNSUPPORTED;
	row->rbp_rule = UNWIND_RBP_SAME;
	if (st->ra.how == RULE_UNDEF) {
		row->cfa_rule = UNWIND_CFA_END;
		return;
	}
	if (st->cfa_expr || (st->cfa_reg != REG_RSP && st->cfa_reg != REG_RBP))
		return;
	if (st->cfa_off < INT32_MIN || st->cfa_off > INT32_MAX)
		return;
	if (st->ra.how != RULE_OFFSET || st->ra.off != -8)
		return;
	/* The walk takes the caller's rsp to be the CFA; a rule saying otherwise
	 * (only __longjmp-like code has one) makes the row unusable. */
	if (st->rsp.how != RULE_UNSPEC && !(st->rsp.how == RULE_VAL_OFFSET && st->rsp.off == 0))
		return;
	row->cfa_rule = st->cfa_reg == REG_RSP ? UNWIND_CFA_RSP : UNWIND_CFA_RBP;
	row->cfa_offset = (int32_t)st->cfa_off;
	switch (st->rbp.how) {
	case RULE_UNSPEC:
	case RULE_UNDEF:
	case RULE_SAME:
		break;
	case RULE_OFFSET:
		if (st->rbp.off >= INT16_MIN && st->rbp.off <= INT16_MAX) {
			row->rbp_rule = UNWIND_RBP_OFFSET;
			row->rbp_offset = (int16_t)st->rbp.off;
		} else {
			row->rbp_rule = UNWIND_RBP_UNSUPPORTED;
		}
		break;
	default:
		row->rbp_rule = UNWIND_RBP_UNSUPPORTED;
	}
}

static int same_rules(const struct unwind_row *a, const struct unwind_row *b)
{
	return a->cfa_rule == b->cfa_rule && a->cfa_offset == b->cfa_offset && a->rbp_rule == b->rbp_rule &&
	       a->rbp_offset == b->rbp_offset;
}

/* Records the current state as holding from it->loc (if inside the FDE). */
static int flush_row(struct interp *it)
{
	struct ctx *x = it->x;
	struct unwind_row row;

	if (!it->emit || it->loc >= it->end)
		return 0;
	state_row(&it->st, (uint32_t)it->loc, &row);
	if (x->nrows > it->first_row && same_rules(&x->rows[x->nrows - 1], &row))
		return 0;
	if (grow((void **)&x->rows, &x->rows_cap, x->nrows + 1, sizeof(row)))
		return -2;
	x->rows[x->nrows++] = row;
	return 0;
}

/* The location moves to new_loc: the state so far held over [loc, new_loc). */
static int advance(struct interp *it, uint64_t new_loc)
{
	int err;

	if (!it->emit) /* a location inside a CIE has no meaning: ignore it */
		return 0;
	if (new_loc < it->loc)
		return -1;
	if (new_loc == it->loc)
		return 0;
	err = flush_row(it);
	it->loc = new_loc;
	return err;
}

static int advance_by(struct interp *it, uint64_t delta)
{
	uint64_t d, to;

	if (__builtin_mul_overflow(delta, it->cie->caf, &d) || __builtin_add_overflow(it->loc, d, &to))
		return -1;
	return advance(it, to);
}

/* Runs a CFA program. Returns 0, -1 (malformed or unsupported opcode: the FDE
 * is skipped) or -2 (out of memory). Stops early once past the FDE's end. */
static int run_cfa(struct interp *it, const uint8_t *start, const uint8_t *end)
{
	struct cur c = {start, end, 0};
	const struct cie *cie = it->cie;
	uint64_t reg, v;
	int err = 0;

	while (c.p < c.end && !err) {
		uint8_t op = *c.p++;

		if (it->emit && it->loc >= it->end)
			break;
		if (op >> 6 == CFA_advance_loc) {
			err = advance_by(it, op & 0x3f);
		} else if (op >> 6 == CFA_offset) {
			v = rd_uleb(&c);
			set_rule(it, op & 0x3f, RULE_OFFSET, smul(u2s(v), cie->daf));
		} else if (op >> 6 == CFA_restore) {
			restore_rule(it, op & 0x3f);
		} else switch (op) {
		case CFA_nop:
			break;
		case CFA_set_loc:
			if (rd_encoded(&c, cie->fde_enc, it->s, it->x, 1, &v) || (cie->fde_enc & PE_indirect))
				return -1;
			err = advance(it, v);
			break;
		case CFA_advance_loc1:
			v = rd_u(&c, 1);
			err = c.bad ? -1 : advance_by(it, v);
			break;
		case CFA_advance_loc2:
			v = rd_u(&c, 2);
			err = c.bad ? -1 : advance_by(it, v);
			break;
		case CFA_advance_loc4:
			v = rd_u(&c, 4);
			err = c.bad ? -1 : advance_by(it, v);
			break;
		case CFA_MIPS_advance_loc8:
			v = rd_u(&c, 8);
			err = c.bad ? -1 : advance_by(it, v);
			break;
		case CFA_offset_extended:
			reg = rd_uleb(&c);
			v = rd_uleb(&c);
			set_rule(it, reg, RULE_OFFSET, smul(u2s(v), cie->daf));
			break;
		case CFA_offset_extended_sf:
			reg = rd_uleb(&c);
			set_rule(it, reg, RULE_OFFSET, smul(rd_sleb(&c), cie->daf));
			break;
		case CFA_GNU_negative_offset_extended:
			reg = rd_uleb(&c);
			v = rd_uleb(&c);
			set_rule(it, reg, RULE_OFFSET, smul(-u2s(v), cie->daf));
			break;
		case CFA_val_offset:
			reg = rd_uleb(&c);
			v = rd_uleb(&c);
			set_rule(it, reg, RULE_VAL_OFFSET, smul(u2s(v), cie->daf));
			break;
		case CFA_val_offset_sf:
			reg = rd_uleb(&c);
			set_rule(it, reg, RULE_VAL_OFFSET, smul(rd_sleb(&c), cie->daf));
			break;
		case CFA_restore_extended:
			restore_rule(it, rd_uleb(&c));
			break;
		case CFA_undefined:
			set_rule(it, rd_uleb(&c), RULE_UNDEF, 0);
			break;
		case CFA_same_value:
			set_rule(it, rd_uleb(&c), RULE_SAME, 0);
			break;
		case CFA_register:
			reg = rd_uleb(&c);
			v = rd_uleb(&c);
			set_rule(it, reg, RULE_REGISTER, u2s(v));
			break;
		case CFA_remember_state:
			if (it->depth == STATE_STACK_MAX)
				return -1;
			it->stack[it->depth++] = it->st;
			break;
		case CFA_restore_state:
			if (it->depth == 0)
				return -1;
			it->st = it->stack[--it->depth];
			break;
		case CFA_def_cfa:
			it->st.cfa_reg = rd_uleb(&c);
			it->st.cfa_off = u2s(rd_uleb(&c));
			it->st.cfa_expr = 0;
			break;
		case CFA_def_cfa_sf:
			it->st.cfa_reg = rd_uleb(&c);
			it->st.cfa_off = smul(rd_sleb(&c), cie->daf);
			it->st.cfa_expr = 0;
			break;
		case CFA_def_cfa_register:
			it->st.cfa_reg = rd_uleb(&c);
			it->st.cfa_expr = 0;
			break;
		case CFA_def_cfa_offset:
			/* Only meaningful for a register CFA; an expression CFA stays one. */
			it->st.cfa_off = u2s(rd_uleb(&c));
			break;
		case CFA_def_cfa_offset_sf:
			it->st.cfa_off = smul(rd_sleb(&c), cie->daf);
			break;
		case CFA_def_cfa_expression:
			skip(&c, rd_uleb(&c));
			it->st.cfa_expr = 1;
			break;
		case CFA_expression:
			reg = rd_uleb(&c);
			skip(&c, rd_uleb(&c));
			set_rule(it, reg, RULE_EXPR, 0);
			break;
		case CFA_val_expression:
			reg = rd_uleb(&c);
			skip(&c, rd_uleb(&c));
			set_rule(it, reg, RULE_VAL_EXPR, 0);
			break;
		case CFA_GNU_args_size:
			rd_uleb(&c);
			break;
		default: /* DW_CFA_GNU_window_save, vendor opcodes: not x86-64 */
			return -1;
		}
		if (c.bad)
			return -1;
	}
	if (err)
		return err;
	return c.bad ? -1 : 0;
}

/* ---- CIEs and FDEs ------------------------------------------------------------ */

struct entry {
	uint64_t offset;     /* of the length field */
	const uint8_t *body; /* after the CIE id / CIE pointer; NULL: too short to hold one */
	const uint8_t *end;
	int is_cie;
	uint64_t cie_offset; /* FDEs: their CIE's offset (UINT64_MAX if it points outside the section) */
};

/* Steps to the next CIE or FDE at *pos. Returns 1 (an entry), 0 (end of the
 * section) or -1 (error set: the section's framing is broken, so nothing
 * after this point can be found). Zero lengths (terminators, padding) are
 * stepped over. */
static int next_entry(struct ctx *x, const struct section *s, uint64_t *pos, struct entry *e)
{
	for (;;) {
		struct cur c;
		uint64_t len, id, id_off;
		unsigned offsz = 4;

		if (*pos >= s->size)
			return 0;
		c = (struct cur){s->data + *pos, s->data + s->size, 0};
		len = rd_u(&c, 4);
		if (c.bad) {
			/* A few trailing bytes: padding if they are zero. */
			for (uint64_t i = *pos; i < s->size; i++)
				if (s->data[i])
					return fail(x, "%s: truncated entry at offset 0x%llx", s->name,
						    (unsigned long long)*pos);
			return 0;
		}
		if (len == 0) {
			*pos += 4;
			continue;
		}
		if (len == 0xffffffff) {
			len = rd_u(&c, 8);
			offsz = 8;
		} else if (len >= 0xfffffff0) {
			return fail(x, "%s: reserved length 0x%llx at offset 0x%llx", s->name,
				    (unsigned long long)len, (unsigned long long)*pos);
		}
		if (c.bad || len > (uint64_t)(c.end - c.p))
			return fail(x, "%s: entry at offset 0x%llx runs past the end of the section", s->name,
				    (unsigned long long)*pos);
		e->offset = *pos;
		e->end = c.p + len;
		*pos = (uint64_t)(e->end - s->data);
		c.end = e->end;
		id_off = (uint64_t)(c.p - s->data);
		/* .eh_frame's CIE id and CIE pointer are 4 bytes even after a 64-bit
		 * length (LSB; libgcc and LLVM read them so). */
		id = rd_u(&c, s->is_eh ? 4 : offsz);
		if (c.bad) { /* too short to be a CIE or an FDE */
			e->body = NULL;
			e->is_cie = 0;
			return 1;
		}
		e->body = c.p;
		if (s->is_eh) {
			e->is_cie = id == 0;
			e->cie_offset = id <= id_off ? id_off - id : UINT64_MAX;
		} else {
			e->is_cie = id == (offsz == 4 ? 0xffffffffULL : UINT64_MAX);
			e->cie_offset = id;
		}
		return 1;
	}
}

static int parse_cie(struct ctx *x, const struct section *s, const struct entry *e, struct cie *cie)
{
	struct cur c = {e->body, e->end, 0};
	struct interp it;
	const char *aug;
	unsigned version;
	int err;

	memset(cie, 0, sizeof(*cie));
	cie->offset = e->offset;
	cie->addr_size = 8;
	version = (unsigned)rd_u(&c, 1);
	aug = rd_str(&c);
	if (c.bad || (version != 1 && version != 3 && version != 4))
		return 0;
	if (aug[0] == 'e' && aug[1] == 'h') { /* ancient GCC: an eh_ptr word follows */
		skip(&c, 8);
		aug += 2;
	}
	if (version >= 4) {
		cie->addr_size = (uint8_t)rd_u(&c, 1);
		if (rd_u(&c, 1) != 0 || (cie->addr_size != 4 && cie->addr_size != 8))
			return 0; /* segment selectors or odd address sizes: unsupported */
	}
	cie->caf = rd_uleb(&c);
	cie->daf = rd_sleb(&c);
	cie->ra_reg = version == 1 ? rd_u(&c, 1) : rd_uleb(&c);
	if (s->is_eh)
		cie->fde_enc = cie->addr_size == 4 ? PE_udata4 : PE_absptr;
	else
		cie->fde_enc = cie->addr_size == 4 ? PE_udata4 : PE_udata8;
	if (aug[0] == 'z') {
		uint64_t len = rd_uleb(&c);
		struct cur a;

		if (c.bad || len > (uint64_t)(c.end - c.p))
			return 0;
		a = (struct cur){c.p, c.p + len, 0};
		c.p += len;
		cie->has_z = 1;
		for (const char *p = aug + 1; *p && !a.bad; p++) {
			uint64_t ignored;
			uint8_t enc;

			if (*p == 'R') {
				cie->fde_enc = (uint8_t)rd_u(&a, 1);
			} else if (*p == 'L') {
				rd_u(&a, 1);
			} else if (*p == 'P') {
				enc = (uint8_t)rd_u(&a, 1);
				if (!a.bad && rd_encoded(&a, (uint8_t)(enc & ~PE_indirect), s, x, 0, &ignored))
					return 0;
			} else if (*p == 'S' || *p == 'B' || *p == 'G') {
				/* signal frame, AArch64 BTI / MTE: no data */
			} else {
				break; /* unknown: the length lets us step over the rest */
			}
		}
		if (a.bad)
			return 0;
	} else if (aug[0]) {
		return 0; /* unknown augmentation without a length: cannot find the instructions */
	}
	if (c.bad || cie->caf == 0)
		return 0;

	interp_init(&it, x, s, cie);
	err = run_cfa(&it, c.p, c.end);
	if (err == -2)
		return -2;
	if (err)
		return 0;
	cie->init = it.st;
	cie->ok = 1;
	return 0;
}

/* Pass 1: every CIE of the section, in file order (so sorted by offset). */
static int read_cies(struct ctx *x, const struct section *s)
{
	uint64_t pos = 0;
	struct entry e;
	int rc;

	x->ncies = 0;
	while ((rc = next_entry(x, s, &pos, &e)) > 0) {
		if (!e.is_cie)
			continue;
		if (grow((void **)&x->cies, &x->cies_cap, x->ncies + 1, sizeof(*x->cies)))
			return fail(x, "out of memory");
		if (parse_cie(x, s, &e, &x->cies[x->ncies]) == -2)
			return fail(x, "out of memory");
		x->ncies++;
	}
	return rc;
}

static const struct cie *find_cie(const struct ctx *x, uint64_t offset)
{
	size_t lo = 0, hi = x->ncies;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (x->cies[mid].offset == offset)
			return x->cies[mid].ok ? &x->cies[mid] : NULL;
		if (x->cies[mid].offset < offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Returns 0 (kept or skipped) or -1 (fatal: error set). */
static int compile_fde(struct ctx *x, const struct section *s, const struct entry *e, uint32_t order)
{
	const struct cie *cie = find_cie(x, e->cie_offset);
	struct cur c = {e->body, e->end, 0};
	struct interp it;
	uint64_t start, range, end;
	int err;

	if (!cie)
		goto skip;
	if (rd_encoded(&c, cie->fde_enc, s, x, 1, &start) || (cie->fde_enc & PE_indirect))
		goto skip;
	if (rd_encoded(&c, cie->fde_enc & 0x0f, s, x, 0, &range))
		goto skip;
	if (cie->addr_size == 4) {
		start &= 0xffffffffULL;
		range &= 0xffffffffULL;
	}
	if (cie->has_z)
		skip(&c, rd_uleb(&c));
	if (c.bad)
		goto skip;
	if (range == 0)
		return 0;
	/* The linker's marks of a discarded function in .debug_frame. */
	if (!s->is_eh && (start == 0 || start >= (cie->addr_size == 4 ? 0xfffffffeULL : 0xfffffffffffffffeULL)))
		return 0;
	if (__builtin_add_overflow(start, range, &end))
		goto skip;
	if (end > ROW_PC_MAX)
		return fail(x, "%s: FDE at offset 0x%llx covers 0x%llx..0x%llx, above 4 GiB (unwind rows hold 32-bit pcs)",
			    s->name, (unsigned long long)e->offset, (unsigned long long)start,
			    (unsigned long long)end);

	interp_init(&it, x, s, cie);
	it.init = &cie->init;
	it.st = cie->init;
	it.emit = 1;
	it.loc = start;
	it.end = end;
	it.first_row = x->nrows;
	err = run_cfa(&it, c.p, c.end);
	if (!err)
		err = flush_row(&it);
	if (err == -2)
		return fail(x, "out of memory");
	if (err) {
		x->nrows = it.first_row;
		goto skip;
	}
	if (grow((void **)&x->fdes, &x->fdes_cap, x->nfdes + 1, sizeof(*x->fdes)))
		return fail(x, "out of memory");
	x->fdes[x->nfdes++] = (struct fde_rec){
		.start = start,
		.end = end,
		.row_begin = it.first_row,
		.row_count = x->nrows - it.first_row,
		.order = order,
		.from_eh = (uint8_t)s->is_eh,
	};
	return 0;
skip:
	x->skipped++;
	return 0;
}

static int compile_section(struct ctx *x, const struct section *s)
{
	uint64_t pos = 0;
	struct entry e;
	int rc;

	if (read_cies(x, s) < 0)
		return -1;
	while ((rc = next_entry(x, s, &pos, &e)) > 0) {
		if (e.is_cie)
			continue;
		if (!e.body) {
			x->skipped++;
			continue;
		}
		if (compile_fde(x, s, &e, (uint32_t)x->nfdes + x->skipped) < 0)
			return -1;
	}
	return rc;
}

/* ---- the table ------------------------------------------------------------------- */

static int cmp_fde(const void *a, const void *b)
{
	const struct fde_rec *p = a, *q = b;

	if (p->from_eh != q->from_eh)
		return p->from_eh ? -1 : 1;
	if (p->start != q->start)
		return p->start < q->start ? -1 : 1;
	return p->order < q->order ? -1 : p->order > q->order;
}

static int cmp_window(const void *a, const void *b)
{
	const struct window *p = a, *q = b;

	return p->start < q->start ? -1 : p->start > q->start;
}

static int push_row(struct cfi_result *res, size_t *cap, const struct unwind_row *row)
{
	if (res->nrows && same_rules(&res->rows[res->nrows - 1], row))
		return 0;
	if (grow((void **)&res->rows, cap, res->nrows + 1, sizeof(*row)))
		return -1;
	res->rows[res->nrows++] = *row;
	return 0;
}

/* Chooses which FDEs (or parts of .debug_frame FDEs) cover which addresses,
 * then lays their rows out in pc order with NONE rows in the gaps. */
static int assemble(struct ctx *x)
{
	struct cfi_result *res = x->res;
	struct window *win = NULL;
	size_t nwin = 0, wcap = 0, neh, i, cap = 0;
	uint64_t last_end = 0;
	int have_last = 0;
	uint8_t *used = NULL;

	if (x->nfdes)
		qsort(x->fdes, x->nfdes, sizeof(*x->fdes), cmp_fde);
	for (neh = 0; neh < x->nfdes && x->fdes[neh].from_eh; neh++)
		;
	/* .eh_frame: the first FDE at an address wins, later overlapping ones are dropped. */
	for (i = 0; i < neh; i++) {
		const struct fde_rec *f = &x->fdes[i];

		if (have_last && f->start < last_end) {
			x->skipped++;
			continue;
		}
		if (grow((void **)&win, &wcap, nwin + 1, sizeof(*win)))
			goto oom;
		win[nwin++] = (struct window){f->start, f->end, i};
		last_end = f->end;
		have_last = 1;
	}
	/* .debug_frame: the same among themselves, then only what .eh_frame leaves uncovered. */
	{
		size_t neh_win = nwin, k = 0;

		have_last = 0;
		for (i = neh; i < x->nfdes; i++) {
			const struct fde_rec *f = &x->fdes[i];
			uint64_t s = f->start;

			if (have_last && f->start < last_end) {
				x->skipped++;
				continue;
			}
			last_end = f->end;
			have_last = 1;
			while (k < neh_win && win[k].end <= s)
				k++;
			for (size_t j = k; s < f->end; j++) {
				uint64_t e = j < neh_win && win[j].start < f->end ? win[j].start : f->end;

				if (e > s) {
					if (grow((void **)&win, &wcap, nwin + 1, sizeof(*win)))
						goto oom;
					win[nwin++] = (struct window){s, e, i};
				}
				if (j >= neh_win || win[j].start >= f->end)
					break;
				s = win[j].end > s ? win[j].end : s;
			}
		}
	}
	if (nwin)
		qsort(win, nwin, sizeof(*win), cmp_window);

	used = calloc(x->nfdes ? x->nfdes : 1, 1);
	/* Each row at most once, plus per window a first row moved to its start and a NONE row. */
	if (!used || grow((void **)&res->rows, &cap, x->nrows + 2 * nwin, sizeof(*res->rows)))
		goto oom;
	for (i = 0; i < nwin; i++) {
		const struct window *w = &win[i];
		const struct fde_rec *f = &x->fdes[w->fde];
		const struct unwind_row *r = x->rows + f->row_begin, *rend = r + f->row_count;
		struct unwind_row row;

		/* The row in force at the window's start, then the ones inside it. */
		while (r + 1 < rend && r[1].pc <= w->start)
			r++;
		for (; r < rend && r->pc < w->end; r++) {
			row = *r;
			if (row.pc < w->start)
				row.pc = (uint32_t)w->start;
			if (push_row(res, &cap, &row))
				goto oom;
		}
		if (i + 1 == nwin || win[i + 1].start != w->end) {
			memset(&row, 0, sizeof(row));
			row.pc = (uint32_t)w->end;
			row.cfa_rule = UNWIND_CFA_NONE;
			row.rbp_rule = UNWIND_RBP_SAME;
			if (push_row(res, &cap, &row))
				goto oom;
		}
		used[w->fde] = 1;
	}
	for (i = 0; i < x->nfdes; i++)
		res->fde_count += used[i];
	if (nwin) {
		res->low_pc = win[0].start;
		res->high_pc = win[nwin - 1].end;
	}
	res->skipped_fdes = x->skipped;
	free(used);
	free(win);
	return 0;
oom:
	free(used);
	free(win);
	return fail(x, "out of memory");
}

/* ---- ELF ----------------------------------------------------------------------------- */

static int read_at(struct ctx *x, int fd, void *buf, size_t len, uint64_t off, const char *what)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail(x, "reading %s: %s", what, strerror(errno));
		if (n == 0)
			return fail(x, "reading %s: unexpected end of file (truncated?)", what);
		done += (size_t)n;
	}
	return 0;
}

static int load_sections(struct ctx *x, int fd, struct section *eh, struct section *dbg)
{
	Elf64_Ehdr eh_hdr;
	Elf64_Shdr *sh = NULL;
	uint8_t *raw = NULL;
	char *names = NULL;
	struct stat st;
	uint64_t shnum, shstrndx, names_size;
	int rc = -1;

	if (fstat(fd, &st) < 0)
		return fail(x, "fstat: %s", strerror(errno));
	if ((uint64_t)st.st_size < sizeof(eh_hdr))
		return fail(x, "not an ELF object (%lld bytes)", (long long)st.st_size);
	if (read_at(x, fd, &eh_hdr, sizeof(eh_hdr), 0, "the ELF header"))
		return -1;
	if (memcmp(eh_hdr.e_ident, ELFMAG, SELFMAG) != 0)
		return fail(x, "not an ELF object");
	if (eh_hdr.e_ident[EI_CLASS] != ELFCLASS64)
		return fail(x, "not a 64-bit ELF object (ELF class %u)", eh_hdr.e_ident[EI_CLASS]);
	if (eh_hdr.e_ident[EI_DATA] != ELFDATA2LSB)
		return fail(x, "not a little-endian ELF object");
	if (eh_hdr.e_machine != EM_X86_64)
		return fail(x, "not an x86-64 object (e_machine %u)", eh_hdr.e_machine);
	if (eh_hdr.e_type != ET_EXEC && eh_hdr.e_type != ET_DYN)
		return fail(x, "ELF type %u: only executables and shared objects have final addresses",
			    eh_hdr.e_type);
	if (eh_hdr.e_shoff == 0)
		return fail(x, "no section headers");
	if (eh_hdr.e_shentsize < sizeof(Elf64_Shdr))
		return fail(x, "section header size %u is too small", eh_hdr.e_shentsize);

	shnum = eh_hdr.e_shnum;
	shstrndx = eh_hdr.e_shstrndx;
	if (shnum == 0 || shstrndx == SHN_XINDEX) { /* extended numbering: in section 0 */
		Elf64_Shdr first;

		if (eh_hdr.e_shoff > (uint64_t)st.st_size ||
		    (uint64_t)st.st_size - eh_hdr.e_shoff < sizeof(first))
			return fail(x, "section headers lie beyond the end of the file (truncated?)");
		if (read_at(x, fd, &first, sizeof(first), eh_hdr.e_shoff, "section header 0"))
			return -1;
		if (shnum == 0)
			shnum = first.sh_size;
		if (shstrndx == SHN_XINDEX)
			shstrndx = first.sh_link;
	}
	if (shnum == 0 || eh_hdr.e_shoff > (uint64_t)st.st_size ||
	    shnum > ((uint64_t)st.st_size - eh_hdr.e_shoff) / eh_hdr.e_shentsize)
		return fail(x, "section headers lie beyond the end of the file (truncated?)");
	if (shstrndx >= shnum)
		return fail(x, "section name table index %llu out of range", (unsigned long long)shstrndx);

	sh = calloc(shnum, sizeof(*sh));
	raw = malloc(shnum * eh_hdr.e_shentsize);
	if (!sh || !raw) {
		fail(x, "out of memory");
		goto out;
	}
	if (read_at(x, fd, raw, shnum * eh_hdr.e_shentsize, eh_hdr.e_shoff, "section headers"))
		goto out;
	for (uint64_t i = 0; i < shnum; i++) /* the entry size may exceed Elf64_Shdr's */
		memcpy(&sh[i], raw + i * eh_hdr.e_shentsize, sizeof(*sh));

	names_size = sh[shstrndx].sh_size;
	if (sh[shstrndx].sh_type == SHT_NOBITS || sh[shstrndx].sh_offset > (uint64_t)st.st_size ||
	    names_size > (uint64_t)st.st_size - sh[shstrndx].sh_offset) {
		fail(x, "section name table lies beyond the end of the file (truncated?)");
		goto out;
	}
	names = malloc(names_size + 1);
	if (!names) {
		fail(x, "out of memory");
		goto out;
	}
	if (read_at(x, fd, names, names_size, sh[shstrndx].sh_offset, "the section name table"))
		goto out;
	names[names_size] = 0;

	for (uint64_t i = 0; i < shnum; i++) {
		const Elf64_Shdr *h = &sh[i];
		const char *name = h->sh_name < names_size ? names + h->sh_name : "";
		struct section *s = NULL;

		if (!strcmp(name, ".text")) {
			x->text_addr = h->sh_addr;
			x->have_text = 1;
		} else if (!strcmp(name, ".got")) {
			x->got_addr = h->sh_addr;
			x->have_got = 1;
		} else if (!strcmp(name, ".eh_frame")) {
			s = eh;
		} else if (!strcmp(name, ".debug_frame")) {
			s = dbg;
		}
		if (!s || s->present || h->sh_type == SHT_NOBITS)
			continue; /* NOBITS: a separate debug file's placeholder */
		if (h->sh_flags & SHF_COMPRESSED)
			continue; /* compressed (debug files): not read */
		if (h->sh_offset > (uint64_t)st.st_size || h->sh_size > (uint64_t)st.st_size - h->sh_offset) {
			fail(x, "section %s lies beyond the end of the file (truncated?)", name);
			goto out;
		}
		s->data = malloc(h->sh_size ? h->sh_size : 1);
		if (!s->data) {
			fail(x, "out of memory");
			goto out;
		}
		if (read_at(x, fd, s->data, h->sh_size, h->sh_offset, name))
			goto out;
		s->size = h->sh_size;
		s->addr = h->sh_addr;
		s->present = 1;
	}
	rc = 0;
out:
	free(names);
	free(raw);
	free(sh);
	return rc;
}

int cfi_compile_fd(int fd, struct cfi_result *res)
{
	struct section eh = {.name = ".eh_frame", .is_eh = 1};
	struct section dbg = {.name = ".debug_frame", .is_eh = 0};
	struct ctx x;
	int rc;

	memset(res, 0, sizeof(*res));
	memset(&x, 0, sizeof(x));
	x.res = res;
	rc = load_sections(&x, fd, &eh, &dbg);
	if (!rc && grow((void **)&x.rows, &x.rows_cap, (eh.size + dbg.size) / 10 + 1, sizeof(*x.rows)))
		rc = fail(&x, "out of memory");
	if (!rc && eh.present) {
		res->sections |= CFI_SECTION_EH_FRAME;
		rc = compile_section(&x, &eh);
	}
	if (!rc && dbg.present) {
		res->sections |= CFI_SECTION_DEBUG_FRAME;
		rc = compile_section(&x, &dbg);
	}
	if (!rc)
		rc = assemble(&x);
	free(eh.data);
	free(dbg.data);
	free(x.cies);
	free(x.rows);
	free(x.fdes);
	if (rc) {
		char error[sizeof(res->error)];

		memcpy(error, res->error, sizeof(error));
		cfi_result_free(res);
		memcpy(res->error, error, sizeof(error));
		return -1;
	}
	return 0;
}

int cfi_compile_path(const char *path, struct cfi_result *res)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc;

	if (fd < 0) {
		int err = errno;

		memset(res, 0, sizeof(*res));
		snprintf(res->error, sizeof(res->error), "open: %s", strerror(err));
		return -1;
	}
	rc = cfi_compile_fd(fd, res);
	close(fd);
	return rc;
}

void cfi_result_free(struct cfi_result *res)
{
	free(res->rows);
	memset(res, 0, sizeof(*res));
}
