# Developer and CI entry points. Every target needs root (real BPF, apt-get).
.PHONY: test-kernels

# Cross-kernel matrix: boot each kernel of vm/kernels.txt under QEMU and run
# doctor + the tests inside (docs/kernels.md). Narrow it with, for example,
#   make test-kernels TESTS="tests/test_pr.py -k reclaim" KERNELS=linux-image-6.1.0-56-amd64
TESTS ?=
KERNELS ?=
test-kernels:
	KERNELS="$(KERNELS)" vm/matrix.sh $(TESTS)
