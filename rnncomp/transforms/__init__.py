"""Graph -> graph transformations: the optimizing pass pipeline and reverse-mode autodiff.

passes.py holds the named pipeline (constant folding, simplification, CSE, LICM, hoisting, gate
and elementwise fusion) and autodiff.py derives BPTT graphs (a scan's transpose is a reverse
scan). Every function here is pure (Graph in, Graph out). Imports only rnncomp.ir.
"""
