"""rnncomp.runtime.memory: the first model run asks glibc's malloc to keep freed memory, so a
model's per-call buffers stop costing a page fault per 4 KiB on every call; RNNCOMP_MALLOC=off
leaves malloc alone; bad values are named. Each case runs in a fresh process (the policy is
process-wide and applied once)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import child_env

CHILD = r"""
import json, resource
import numpy as np
import rnncomp as rc
from rnncomp.runtime import memory

before = memory.applied()
# every intermediate is 4 MiB: far above malloc's default mmap threshold (128 KiB)
m = rc.Model(lambda x: rc.tanh(x * 2.0) + rc.sigmoid(x), {"x": rc.Input((1024, 1024))},
             name="memory_policy")
x = np.ones((1024, 1024), np.float32)
p = m.init()
for _ in range(2):
    m(p, x=x, backend="interp")
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    m(p, x=x, backend="interp")
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 3
print(json.dumps({"before": before, "after": memory.applied(), "faults": faults}))
"""


def run_child(env: dict, code: str = CHILD) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=child_env(env), capture_output=True,
                          text=True, timeout=300)


def result(env: dict) -> dict:
    r = run_child(env)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_first_run_keeps_freed_memory_and_stops_page_faults():
    on = result({"RNNCOMP_MALLOC": "", "RNNCOMP_MALLOC_KEEP": ""})
    off = result({"RNNCOMP_MALLOC": "off", "RNNCOMP_MALLOC_KEEP": ""})
    assert on["before"] is None, "the policy must not be applied at import"
    assert on["after"]["applied"] is True, on
    assert on["after"]["trim_threshold"] == 1 << 30
    assert on["after"]["mmap_threshold"] >= 32 << 20
    assert off["after"] == {"applied": False, "reason": "$RNNCOMP_MALLOC=off"}, off
    # a call writes several 4 MiB arrays: about 1024 faults each without the policy
    assert off["faults"] > 1000, off
    assert on["faults"] < 100, on


def test_keep_bytes_is_the_trim_threshold():
    r = result({"RNNCOMP_MALLOC_KEEP": str(64 << 20)})
    if not sys.platform.startswith("linux"):
        assert r["after"]["applied"] is False
        return
    assert r["after"]["trim_threshold"] == 64 << 20
    assert r["after"]["mmap_threshold"] == 64 << 20  # never above what is kept


@pytest.mark.parametrize("var,value,expected", [
    ("RNNCOMP_MALLOC", "sometimes", "RNNCOMP_MALLOC: expected 'on' or 'off', received 'sometimes'"),
    ("RNNCOMP_MALLOC_KEEP", "-5", "RNNCOMP_MALLOC_KEEP: expected a number of bytes >= 0, "
                                  "received '-5'"),
    ("RNNCOMP_MALLOC_KEEP", "1GB", "RNNCOMP_MALLOC_KEEP: expected a number of bytes >= 0, "
                                   "received '1GB'"),
])
def test_bad_values_are_named(monkeypatch, var, value, expected):
    from rnncomp.runtime import memory

    monkeypatch.setattr(memory, "_state", None)
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError) as e:
        memory.ensure_applied()
    assert expected in str(e.value)
    assert memory.applied() is None  # nothing applied: the next run reports it again
