"""`python -m rnncomp ...` is the `rnncomp` command line (rnncomp.tools.cli)."""

from rnncomp.tools.cli import main

raise SystemExit(main())
