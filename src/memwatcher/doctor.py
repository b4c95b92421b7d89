"""`memwatcher doctor`: what this kernel and process allow, report by report."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from . import kernel, libbpf
from .kernel import Plan
from .tools import report_modules

__all__ = ["Check", "Diagnosis", "diagnose"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Diagnosis:
    kernel_release: str
    libbpf_version: str
    checks: list[Check]
    plans: list[Plan]

    @property
    def all_runnable(self) -> bool:
        """Exit status of doctor: BPF usable here and every report can run."""
        essential = [c for c in self.checks if c.name in ("btf", "privileges")]
        return all(c.ok for c in essential) and all(p.runnable for p in self.plans)

    def to_json(self) -> dict:
        return {
            "kernel_release": self.kernel_release,
            "libbpf_version": self.libbpf_version,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks},
            "reports": {
                p.report: {
                    "runnable": p.runnable,
                    "variant": p.variant,
                    "hooks": [asdict(h) for h in p.hooks],
                    "reasons": p.reasons(),
                }
                for p in self.plans
            },
        }


def diagnose() -> Diagnosis:
    priv = kernel.privileges()
    checks = [
        Check("btf", kernel.btf_available(), str(kernel.BTF_PATH)),
        Check(
            "privileges",
            priv.can_trace,
            "root"
            if priv.root and priv.can_trace
            else ("CAP_BPF+CAP_PERFMON" if priv.can_trace else "needs root or CAP_BPF+CAP_PERFMON"),
        ),
    ]
    tracefs = kernel.tracefs_dir(mount=priv.can_trace) if priv.can_trace else kernel.tracefs_dir(mount=False)
    checks.append(Check("tracefs", tracefs is not None, str(tracefs) if tracefs else "not mounted"))
    plans: list[Plan] = []
    if priv.can_trace and kernel.btf_available():
        for feature, result in kernel.probe_features().items():
            checks.append(Check(feature, result.available, result.detail))
        for name, module in report_modules().items():
            try:
                plans.append(module.plan())
            except libbpf.MemwatcherError as e:
                plans.append(Plan(name, problems=[str(e)]))
    else:
        reason = "no BPF privileges" if not priv.can_trace else "no kernel BTF"
        plans = [
            module.plan() if not getattr(module, "USES_BPF", True) else Plan(name, problems=[reason])
            for name, module in report_modules().items()
        ]
    return Diagnosis(kernel.kernel_release(), libbpf.libbpf_version(), checks, plans)
