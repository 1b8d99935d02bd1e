"""Running graphs: the reference interpreter, the compile driver, the kernel cache, Model and the
gradient API.

interp.py executes any graph with NumPy (the oracle of every test); compiler.py optimizes a graph
and hands it to a backend chosen by name from its BACKENDS table (backends are imported lazily,
never at import time); kernel_cache.py owns the on-disk cache that both backends use;
model.py and grad.py are the user-facing Model and value_and_grad. Imports rnncomp.ir,
rnncomp.frontend and rnncomp.transforms; never Numba.
"""
