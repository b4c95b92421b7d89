"""Build glue: compile the BPF objects before packaging, and the cffi extensions (libbpf, CFI)."""

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TOP = Path(__file__).resolve().parent


class BuildWithBPF(build_py):
    """Run build.sh so the package data holds fresh .bpf.o objects."""

    def run(self):
        subprocess.run([str(TOP / "build.sh")], check=True, cwd=TOP)
        super().run()


setup(
    cmdclass={"build_py": BuildWithBPF},
    cffi_modules=["src/memwatcher/_libbpf_build.py:ffibuilder", "src/memwatcher/_cfi_build.py:ffibuilder"],
    # <prefix>/share/man/man1: man finds it from the bin/ directory on PATH (a venv's too).
    data_files=[("share/man/man1", ["docs/memwatcher.1"])],
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
