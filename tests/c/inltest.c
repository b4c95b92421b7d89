/*
 * Inlining test program (tests/test_symbolize.py), built -g -O2.
 *
 * inl_helper is always inlined into inl_outer; the call to inl_sink inside
 * it leaves a return address whose instruction belongs to the inlined copy.
 * Prints "sink_ret 0xADDR", "outer_entry 0xADDR", "ready" and waits until
 * stdin closes.
 */
#include <stdio.h>
#include <unistd.h>

static void *sink_ret;

__attribute__((noinline, noipa)) int inl_sink(int x)
{
	sink_ret = __builtin_return_address(0);
	return x * 7;
}

static inline __attribute__((always_inline)) int inl_helper(int x)
{
	int v = inl_sink(x + 3); /* MARK:inl_call */
	return v ^ 0x55;
}

__attribute__((noinline, noipa)) int inl_outer(int x)
{
	int v = inl_helper(x); /* MARK:outer_call */
	return v * 3 + 1;
}

int main(int argc, char **argv)
{
	char buf[16];
	(void)argv;

	if (inl_outer(argc) == 42)
		return 2;
	printf("sink_ret %p\n", sink_ret);
	printf("outer_entry %p\n", (void *)inl_outer);
	printf("ready\n");
	fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		;
	return 0;
}
