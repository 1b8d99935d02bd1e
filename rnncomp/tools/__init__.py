"""Tools around the compiler: the command line (cli.py), graph pictures (viz.py: networkx and
Graphviz DOT adapters over the IR) and weight conversion to and from PyTorch (convert.py).

May import every other subpackage of rnncomp; nothing imports tools.
"""
