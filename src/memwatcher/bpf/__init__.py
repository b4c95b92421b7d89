"""Compiled CO-RE BPF objects (``<report>.bpf.o``) and record headers, built by build.sh."""
