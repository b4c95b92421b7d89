/*
 * C++ demangling test program (tests/test_demangle.py), built g++ -g -O2.
 *
 * Each function under test stores a return address inside itself (a call to
 * here(), which is never inlined) and main prints them as "NAME 0xADDR":
 * a function in a nested namespace, two instances of a function template, a
 * constructor that allocates, a member operator, and an always_inline
 * template inlined into a namespaced function. Then "ready"; it waits until
 * stdin closes.
 */
#include <cstddef>
#include <cstdio>
#include <unistd.h>

static void *pcs[8];

__attribute__((noinline, noipa)) static void *here()
{
	return __builtin_return_address(0);
}

namespace mw {
namespace deep {

__attribute__((noinline, noipa)) char *make_buffer(std::size_t n)
{
	pcs[0] = here();
	return new char[n];
}

} // namespace deep

template <typename T> __attribute__((noinline, noipa)) T *make_array(std::size_t n)
{
	pcs[1 + (sizeof(T) == 8)] = here();
	return new T[n]();
}

class Holder {
public:
	__attribute__((noinline, noipa)) explicit Holder(std::size_t n) : data_(new int[n]), size_(n)
	{
		pcs[3] = here();
	}

	__attribute__((noinline, noipa)) Holder &operator+=(const Holder &other)
	{
		pcs[4] = here();
		size_ += other.size_;
		return *this;
	}

	int *data_;
	std::size_t size_;
};

template <typename T> inline __attribute__((always_inline)) T scaled(T v)
{
	pcs[5] = here();
	return v * 3;
}

__attribute__((noinline, noipa)) int run_scaled(int v)
{
	return scaled(v) + 1;
}

} // namespace mw

int main()
{
	static const char *const names[] = {"namespaced", "template_int", "template_double",
					    "constructor", "operator", "inlined"};
	char buf[16];

	char *b = mw::deep::make_buffer(32);
	int *ints = mw::make_array<int>(4);
	double *doubles = mw::make_array<double>(4);
	mw::Holder h(8), g(2);
	h += g;
	int r = mw::run_scaled(5);
	for (std::size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		std::printf("%s %p\n", names[i], pcs[i]);
	std::printf("ready\n");
	std::fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		;
	delete[] b;
	delete[] ints;
	delete[] doubles;
	delete[] h.data_;
	delete[] g.data_;
	return r == 42;
}
