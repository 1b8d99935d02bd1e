"""Embedding lookup, forward + backward, vocabulary 20k: rnncomp's gather / scatter-add
(layers.embedding) against the one_hot @ table formulation it replaced, and torch.nn.Embedding
where PyTorch is installed. Each configuration runs in its own process, so the peak resident
memory (ru_maxrss) growth over the process's state after tracing is its own.

    python bench/bench_embedding.py                 # vocab 20000, dim 128, ids [32, 50]
    python bench/bench_embedding.py --vocab 50000 --backend interp
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time


def child(kind: str, backend: str, vocab: int, dim: int, batch: int, steps: int,
          repeat: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (batch, steps)).astype(np.int32)
    r = rng.standard_normal((batch, steps, dim)).astype(np.float32)
    if kind == "torch":
        import torch

        torch.set_num_threads(1)
        emb = torch.nn.Embedding(vocab, dim)
        ti, tr = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(r)

        def step():
            emb.zero_grad()
            (emb(ti) * tr).sum().backward()
    else:
        import rnncomp as rc
        from rnncomp import layers

        def model(ids, R):
            if kind == "gather":
                e = layers.embedding(ids, vocab, dim)
            else:  # the formulation layers.embedding used before: one_hot(ids) @ table
                with rc.variable_scope("embedding"):
                    table = rc.param("embeddings", (vocab, dim), "random_uniform")
                e = rc.matmul(rc.one_hot(ids, vocab), table)
            return rc.reduce_sum(e * R)

        m = rc.Model(model, {"ids": rc.Input((None, None), "i32"),
                             "R": rc.Input((None, None, dim))})
        p = m.init(0)

        def step():
            m.value_and_grad(p, backend=backend, ids=ids, R=r)

    step()  # compile / warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": kind, "backend": backend if kind != "torch" else "torch",
            "median_ms": 1e3 * sorted(times)[len(times) // 2],
            "peak_rss_mb": peak / 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=20000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--backend", action="append", help="cpu and/or interp (default both)")
    p.add_argument("--child", nargs=2, metavar=("KIND", "BACKEND"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sizes = (a.vocab, a.dim, a.batch, a.steps, a.repeat)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], *sizes)))
        return 0
    print(f"vocab {a.vocab}, dim {a.dim}, ids [{a.batch}, {a.steps}], fwd+bwd of "
          f"sum(embedding(ids) * R), median of {a.repeat}, one process per row")
    rows = [(k, b) for b in (a.backend or ["cpu", "interp"]) for k in ("gather", "one_hot")]
    # not imported here: a child's peak RSS starts at its parent's (Linux keeps ru_maxrss
    # across exec), so the parent stays small
    if importlib.util.find_spec("torch") is not None:
        rows.append(("torch", "-"))
    else:
        print("(torch.nn.Embedding row skipped: pip install torch to add it)")
    for kind, backend in rows:
        cmd = [sys.executable, __file__, "--child", kind, backend, "--vocab", str(a.vocab),
               "--dim", str(a.dim), "--batch", str(a.batch), "--steps", str(a.steps),
               "--repeat", str(a.repeat)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{kind:8s} {backend:7s} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        label = {"gather": "gather + scatter-add", "one_hot": "one_hot @ table (before)",
                 "torch": "torch.nn.Embedding"}[kind]
        print(f"{label:26s} {r['backend']:7s} {r['median_ms']:9.2f} ms   peak RSS "
              f"{r['peak_rss_mb']:7.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
