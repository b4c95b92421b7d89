/*
 * Symbolization test program (tests/test_symbolize.py).
 *
 * Prints "name 0xADDR" lines for addresses whose function and source line
 * the test knows from the MARK comments below, then "ready", and waits until
 * stdin closes. Built -g -O0 -fPIE -pie (and stripped variants).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *leaf_ret;
static void *thread_ret;

__attribute__((noinline)) void *symtest_leaf(int depth) { /* MARK:leaf_entry */
	leaf_ret = __builtin_return_address(0);
	return depth > 100 ? NULL : leaf_ret;
}

__attribute__((noinline)) static int symtest_caller(int depth)
{
	void *r = symtest_leaf(depth + 1); /* MARK:call_leaf */
	return r != NULL;
}

static void *symtest_thread(void *arg)
{
	thread_ret = __builtin_return_address(0);
	return arg;
}

int main(void)
{
	pthread_t t;
	char buf[16];

	symtest_caller(0);
	if (pthread_create(&t, NULL, symtest_thread, NULL) != 0 || pthread_join(t, NULL) != 0)
		return 1;
	printf("leaf_entry %p\n", (void *)symtest_leaf);
	printf("caller_entry %p\n", (void *)symtest_caller);
	printf("call_leaf_ret %p\n", leaf_ret);
	printf("main_ret %p\n", __builtin_return_address(0));
	printf("thread_ret %p\n", thread_ret);
	printf("malloc %p\n", (void *)malloc);
	printf("ready\n");
	fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		;
	return 0;
}
