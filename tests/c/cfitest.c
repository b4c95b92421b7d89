/*
 * CFI compiler test program (tests/test_cfi.py).
 *
 * Never run: only compiled with various frame-pointer and unwind-table
 * options, so its call-frame information has frames of many shapes:
 * leaves, callee-saved pushes, big and variable-sized stack frames (an rbp
 * frame even without frame pointers), an over-aligned local (stack
 * realignment: CFAs the row format cannot express) and an allocator wrapper
 * with a noreturn error path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) long cfi_leaf(long x)
{
	return x * 3 + 1;
}

__attribute__((noinline)) long cfi_pushes(long *v, long n)
{
	long a = 0, b = 1, c = 2, d = 3, e = 4;

	for (long i = 0; i < n; i++) {
		a += cfi_leaf(v[i]);
		b ^= a * v[i];
		c += b >> 3;
		d -= c + i;
		e += cfi_leaf(d);
	}
	return a + b + c + d + e;
}

__attribute__((noinline)) long cfi_big_frame(int seed)
{
	char buf[8192];

	memset(buf, seed, sizeof(buf));
	snprintf(buf, 64, "%d", seed);
	return (long)strlen(buf) + buf[4000];
}

__attribute__((noinline)) long cfi_vla(int n)
{
	long v[n];

	for (int i = 0; i < n; i++)
		v[i] = i;
	return cfi_pushes(v, n);
}

/* Over-aligned local plus a VLA: GCC realigns through r10 (DRAP), so the CFA is
 * r10 + 0, then a DWARF expression, and rbp is saved by an expression. */
__attribute__((noinline)) long cfi_realign(int n)
{
	char buf[256] __attribute__((aligned(64)));
	long v[n];

	memset(buf, n, sizeof(buf));
	for (int i = 0; i < n; i++)
		v[i] = buf[i & 255];
	return cfi_leaf(v[n / 2]) + (long)(unsigned long)buf;
}

__attribute__((noinline)) void *cfi_alloc(size_t n)
{
	void *p = malloc(n);

	if (__builtin_expect(p == NULL, 0)) {
		fprintf(stderr, "out of memory for %zu bytes\n", n);
		abort();
	}
	return p;
}

int main(int argc, char **argv)
{
	long r = cfi_big_frame(argc) + cfi_vla(argc + 2) + cfi_realign(argc);
	void *p = cfi_alloc((size_t)argc * 16);

	free(p);
	(void)argv;
	return (int)(r & 1);
}
