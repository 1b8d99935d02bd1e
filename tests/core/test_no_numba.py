"""The core (IR, DSL, interpreter, printer, verifier, viz) never imports Numba."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_core_does_not_import_numba():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import rnncomp as rc
        from rnncomp import viz

        def model(X, L):
            return rc.dynamic_rnn(rc.DropoutWrapper(rc.BasicLSTMCell(5), 0.8), X,
                                  sequence_length=L)

        m = rc.Model(model, {"X": rc.Input((None, None, 3)), "L": rc.Input((None,), "i32")})
        rc.verify(m.graph)
        text = str(m.graph) + viz.to_dot(m.graph)
        out, st = m(m.init(0), training=True, seed=1, X=np.ones((2, 4, 3)),
                    L=np.array([4, 2], np.int32))
        assert out.shape == (2, 4, 5) and np.all(out[1, 2:] == 0)
        print("numba" in sys.modules, sorted(k for k in sys.modules if k.startswith("numba"))[:3])
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False []"
