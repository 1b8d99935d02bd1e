"""The front end: what users write, traced into IR graphs.

Owns tracing (trace.py: the trace context, named parameters under TF1 variable scopes), the DSL
ops (dsl.py), the TF1 cells and wrappers written in that DSL (cells.py), static/dynamic unrolls
and the general scan (rnn.py), layers, losses and parameter initializers. It imports only
rnncomp.ir; nothing here runs a graph.
"""
