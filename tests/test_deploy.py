"""Deployment files: the Kubernetes DaemonSet, the Dockerfile of its image, the systemd unit.

There is no container runtime or cluster here. The tests hold each file to what it claims
and run its command the way the deployment would: as a user that is not root, with exactly
the capabilities the file grants, on this machine's kernel, until every report serves.
(The unit's `systemd-analyze verify`, which needs the installed man page, is in test_wheel.)
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import MEMWATCHER, free_port, requires_bpf, setpriv_nobody

TOP = Path(__file__).resolve().parents[1]
DAEMONSET = TOP / "docs" / "kubernetes-daemonset.yaml"
UNIT = TOP / "docs" / "memwatcher.service"
DOCKERFILE = TOP / "Dockerfile"
REPORTS = {"procstat", "sysstat", "paf", "pr", "oom"}


def _daemonset() -> tuple[dict, dict]:
    """The DaemonSet and its one container."""
    daemonset = next(d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d and d["kind"] == "DaemonSet")
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return daemonset, container


def _unit() -> dict[str, str]:
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings[key] = value
    return settings


def _dockerfile(instruction: str) -> list[str]:
    lines = DOCKERFILE.read_text().splitlines()
    return [line.split(None, 1)[1] for line in lines if line.startswith(instruction + " ")]


def _listen_port(args: list[str]) -> int:
    return int(args[args.index("--listen") + 1].rsplit(":", 1)[1])


def test_daemonset_grants_bpf_and_perfmon_not_privilege() -> None:
    daemonset, container = _daemonset()
    pod = daemonset["spec"]["template"]
    security = container["securityContext"]
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON"]}
    assert security["readOnlyRootFilesystem"] is True
    assert pod["spec"]["hostPID"] is True  # BPF sees the node's pids
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/sys/kernel/btf"} and mounts["/sys/kernel/btf"]["readOnly"] is True
    port = _listen_port(container["args"])
    assert container["ports"][0]["containerPort"] == port
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/metrics"


def test_daemonset_runs_the_image_the_dockerfile_builds() -> None:
    _, container = _daemonset()
    image = container["image"]
    assert image.rsplit(":", 1)[1] == version("memwatcher")
    assert f"docker build -t {image} ." in DOCKERFILE.read_text()
    assert _dockerfile("ENTRYPOINT") == ['["memwatcher"]'] and container["command"] == ["memwatcher"]
    assert _dockerfile("EXPOSE") == [str(_listen_port(container["args"]))]
    # The image gets memwatcher from the wheel the project's own script builds.
    assert "./scripts/build-wheel.sh /wheelhouse" in DOCKERFILE.read_text()


def test_unit_grants_bpf_and_perfmon_not_root() -> None:
    unit = _unit()
    assert unit["DynamicUser"] == "yes" and "User" not in unit
    assert unit["AmbientCapabilities"].split() == ["CAP_BPF", "CAP_PERFMON"]
    assert unit["CapabilityBoundingSet"].split() == ["CAP_BPF", "CAP_PERFMON"]
    assert unit["KillSignal"] == "SIGTERM" and unit["Documentation"] == "man:memwatcher(1)"


def _serve_as_deployed(args: list[str], caps: list[str]) -> str:
    """Run ``memwatcher <args>`` (listening on a free loopback port instead) as nobody with
    exactly ``caps``; return a scrape once every report has loaded. SIGTERM must end it with 0."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    port = free_port()
    args = list(args)
    args[args.index("--listen") + 1] = f"127.0.0.1:{port}"
    proc = subprocess.Popen([*setpriv_nobody(caps), *MEMWATCHER, *args], stderr=subprocess.PIPE, text=True, cwd="/")
    text, deadline = "", time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert text, f"no scrape: {proc.stderr.read() if proc.poll() is not None else 'timed out'}"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err
    return text


def _loaded_reports(text: str) -> dict[str, float]:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {s.labels["report"]: s.value for s in families["memwatcher_exporter_report_loaded"].samples}


@requires_bpf
def test_daemonset_command_serves_every_report_with_its_capabilities() -> None:
    _, container = _daemonset()
    text = _serve_as_deployed(container["args"], container["securityContext"]["capabilities"]["add"])
    assert _loaded_reports(text) == dict.fromkeys(REPORTS, 1)
    assert re.search(r'^memwatcher_process_rss_bytes\{cgroup="[^"]*",comm="', text, re.M)
    assert "memwatcher_cgroup_memory_bytes{" in text


@requires_bpf
def test_unit_command_serves_every_report_with_its_capabilities() -> None:
    unit = _unit()
    _, *args = shlex.split(unit["ExecStart"])
    caps = [cap.removeprefix("CAP_") for cap in unit["AmbientCapabilities"].split()]
    assert _loaded_reports(_serve_as_deployed(args, caps)) == dict.fromkeys(REPORTS, 1)
