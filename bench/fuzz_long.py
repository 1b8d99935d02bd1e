"""Long differential fuzzing run: random custom cells, interpreter vs a compiled backend.

    python bench/fuzz_long.py --examples 200 --depth 3            # new random cells (compiles!)
    python bench/fuzz_long.py --pool --examples 500               # the quick test's cell pool
    python bench/fuzz_long.py --backend cuda --examples 50        # (NUMBA_ENABLE_CUDASIM=1 ok)

The cells come from tests/robust/test_fuzz.py (`cells()`: every op tree shrinks, so a failure
is reduced to a minimal cell). Each new cell costs one Numba compile of its gradient graph.
A failure is saved as tests/robust/regressions/<name>.json (replayed by test_regressions_replay);
rename it to something descriptive and, if the bug is not fixed yet, add an "xfail" reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROBUST = Path(__file__).resolve().parents[1] / "tests" / "robust"
sys.path.insert(0, str(ROBUST))
sys.path.insert(0, str(ROBUST.parents[1]))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import test_fuzz as tf  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=100, help="hypothesis max_examples")
    ap.add_argument("--depth", type=int, default=3, help="maximum op-tree depth")
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--pool", action="store_true",
                    help="only the quick test's fixed cells (no new compiles)")
    ap.add_argument("--seed", type=int, default=None,
                    help="hypothesis seed (default: random; derandomized with --derandomize)")
    ap.add_argument("--derandomize", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every example")
    ap.add_argument("--name", default=None, help="regression file name (default: fuzz-<time>)")
    args = ap.parse_args(argv)

    cell_strategy = st.sampled_from(tf.POOL) if args.pool else tf.cells(args.depth)
    name = args.name or f"fuzz-{time.strftime('%Y%m%d-%H%M%S')}"
    count = [0]
    last: list = []
    t0 = time.perf_counter()

    @settings(max_examples=args.examples, deadline=None, derandomize=args.derandomize,
              database=None, suppress_health_check=list(HealthCheck), print_blob=True)
    @given(case=tf.case_data(cell_strategy))
    def run(case):
        count[0] += 1
        if args.verbose:
            print(f"[{count[0]}] {time.perf_counter() - t0:.0f}s B={case['B']} T={case['T']} "
                  f"cell={json.dumps(case['cell'])}", flush=True)
        try:
            tf.check_case(case, args.backend)
        except ImportError:  # a broken environment, not a finding
            raise
        except Exception as e:
            last[:] = [case, e]
            raise

    if args.seed is not None:
        run = __import__("hypothesis").seed(args.seed)(run)
    try:
        run()
    except Exception as e:  # the minimal failing example was replayed last
        case, err = last if last else (None, e)
        if case is not None:
            path = tf.save_failure(dict(case, backend=args.backend), name, err)
            final = path.with_name(f"{name}.json")
            path.rename(final)
            print(f"FAILURE after {count[0]} runs; minimal case saved to {final}\n"
                  f"{type(err).__name__}: {err}", file=sys.stderr)
        raise
    print(f"ok: {count[0]} runs, {len(tf._COMPILED)} distinct cells, "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
