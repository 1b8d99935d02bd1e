"""Plant known bugs one at a time and check that the tests catch them (run by hand, not by pytest).

    .venv-ci/bin/python tests/mutations.py                 # every mutation, its named tests
    .venv-ci/bin/python tests/mutations.py forget_bias     # some of them
    .venv-ci/bin/python tests/mutations.py --list

Each mutation is an exact text edit of one production file. It is applied to a COPY of the
working tree (tracked and untracked-but-not-ignored files, under a temporary directory; the real
tree is never touched), then the mutation's named tests run there with a fresh kernel cache
(RNNCOMP_TEST_CACHE_DIR and RNNCOMP_CACHE_DIR).
"caught" means pytest exited with failures (exit code 1); any other outcome (passed, errors
during collection, no tests) is reported as is. A mutation whose text is not found in the file
is reported as "stale" (the code moved: update the table).

`prefill`: run the tests once BEFORE the edit with the same cache directory, so the kernel cache
already holds kernels compiled from the unmutated helpers (the stale-kernel scenario of issue 21).

Results are recorded in tests/README.md (section "Mutation check").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@dataclass
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: list[list[str]]           # pytest argument lists, each run and reported separately
    prefill: bool = False
    notes: str = ""
    extra: dict = field(default_factory=dict)


# the compiled-backend checks of one compile (cells rnn_tanh, rnn_relu, basic_lstm, lstm_peep,
# gru_before; dynamic_rnn with sequence_length, float64)
COMPILED_A = ["tests/cpu/test_compiled_cells.py", "-k", "A-dyn-len-f64"]
# the CUDA backend (simulator) against torch: LSTM, reset-after GRU, tanh/relu RNN in one compile
CUDA_TORCH = ["tests/cuda/test_cuda_sim.py", "-k", "torch"]

MUTATIONS = [
    Mutation(
        "forget_bias", "forget_bias not added (BasicLSTMCell)",
        "rnncomp/frontend/cells.py",
        "            f = dsl.sigmoid(zf + self.forget_bias)\n",
        "            f = dsl.sigmoid(zf)\n",
        [["tests/core/test_cells.py"], ["tests/core/test_convert.py"], COMPILED_A, CUDA_TORCH]),
    Mutation(
        "gru_reset_after_matmul", "TF1 GRU: reset applied after the matmul",
        "rnncomp/frontend/cells.py",
        "            c = self.activation(dsl.matmul(dsl.concat([inputs, r * h], 1), ck) + cb)\n",
        "            kx, kh = dsl.split(ck, [isz, H], axis=0)\n"
        "            c = self.activation(dsl.matmul(inputs, kx) + cb + r * dsl.matmul(h, kh))\n",
        [["tests/core/test_cells.py"], ["tests/core/test_grad_torch.py"], COMPILED_A]),
    Mutation(
        "final_state_last_step", "final state taken at T-1 instead of the last valid step",
        "rnncomp/frontend/rnn.py",
        "            new_flat = [_mask(valid, n, o) for n, o in zip(new_flat, carries)]\n",
        "            new_flat = list(new_flat)  # (state not masked: the final state is step T-1's)\n",
        [["tests/core/test_rnn.py"], COMPILED_A]),
    Mutation(
        "tanh_grad", "tanh gradient uses 1-y",
        "rnncomp/ir/ops.py",
        "    return (mul(ct, sub(one, mul(node, node))),)\n",
        "    return (mul(ct, sub(one, node)),)\n",
        [["tests/core/test_autodiff.py"], ["tests/core/test_tbptt.py"], COMPILED_A, CUDA_TORCH]),
    Mutation(
        "fastmath_sigmoid_f32", "float32 sigmoid sign flip in backends/cpu/fastmath.py "
        "(kernel cache filled before the edit)",
        "backends/cpu/fastmath.py",
        "    return r if x >= _F32(0.0) else e * r\n",
        "    return e * r if x >= _F32(0.0) else r\n",
        [["tests/robust/test_fuzz.py", "-k", "interp_vs_cpu"], ["tests/cpu/test_fastmath.py"]],
        prefill=True),
    Mutation(
        "adam_bias_correction", "Adam bias correction dropped",
        "rnncomp/train/optim.py",
        "        m_hat = m / (1.0 - self.beta1**t)\n        v_hat = v / (1.0 - self.beta2**t)\n",
        "        m_hat = m\n        v_hat = v\n",
        [["tests/core/test_optim.py"], ["tests/core/test_train.py"],
         ["tests/core/test_checkpoint.py"]]),
]


def copy_tree(dst: Path) -> None:
    """The working tree as git sees it (tracked + untracked, not ignored), without .git."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    for f in files:
        if not f:
            continue
        rel = f.decode()
        src = REPO / rel
        if not src.is_file():
            continue  # deleted in the working tree
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)
    # the source layout maps backends/ to rnncomp.backends (pyproject package-dir); the editable
    # install would map it back to the real tree, so the copy gets its own rnncomp/backends
    link = dst / "rnncomp" / "backends"
    if not link.exists():
        link.symlink_to(Path("..") / "backends")


def run_pytest(tree: Path, args: list[str], cache: Path) -> tuple[int, float, str]:
    # RNNCOMP_TEST_CACHE_DIR: the test session's kernel cache (tests/conftest.py) is this one
    env = dict(os.environ, RNNCOMP_CACHE_DIR=str(cache), RNNCOMP_TEST_CACHE_DIR=str(cache),
               PYTHONPATH=str(tree))
    env.pop("RNNCOMP_ALWAYS_COMPILE", None)
    t0 = time.time()
    r = subprocess.run([PYTHON, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
                       cwd=tree, env=env, capture_output=True, text=True)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    return r.returncode, time.time() - t0, (lines[-1] if lines else "")


def verdict(rc: int) -> str:
    return {0: "NOT caught", 1: "caught"}.get(rc, f"rc={rc} (error/interrupted)")


def run_mutation(m: Mutation, baseline: bool) -> list[tuple[str, str, float, str]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"rnncomp-mut-{m.name}-") as tmp:
        tree = Path(tmp) / "tree"
        copy_tree(tree)
        cache = Path(tmp) / "cache"
        target = tree / m.path
        text = target.read_text()
        if text.count(m.old) != 1:
            return [("(all)", f"stale: the text to replace occurs {text.count(m.old)} times in "
                     f"{m.path}", 0.0, "")]
        if baseline:
            for args in m.tests:
                rc, dt, last = run_pytest(tree, args, Path(tmp) / "cache-baseline")
                rows.append((" ".join(args) + " [unmutated]",
                             "passes" if rc == 0 else f"FAILS UNMUTATED rc={rc}", dt, last))
        if m.prefill:
            for args in m.tests:
                run_pytest(tree, args, cache)
        target.write_text(text.replace(m.old, m.new))
        for args in m.tests:
            rc, dt, last = run_pytest(tree, args, cache)
            rows.append((" ".join(args), verdict(rc), dt, last))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutations to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--baseline", action="store_true",
                    help="also run each test set unmutated first (it must pass)")
    args = ap.parse_args(argv)
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:24} {m.path:28} {m.what}")
        return 0
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        ap.error(f"unknown mutation(s) {sorted(unknown)}; --list shows them")
    missed = 0
    print("| planted bug | test run | result | time |")
    print("|---|---|---|---|")
    for m in chosen:
        rows = run_mutation(m, args.baseline)
        if not any(r[1] == "caught" for r in rows):
            missed += 1
        for test, res, dt, last in rows:
            print(f"| {m.what} | {test} | {res} | {dt:.0f} s |", flush=True)
    print(f"\n{len(chosen) - missed}/{len(chosen)} mutations caught by at least one test run")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
