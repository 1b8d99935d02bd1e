"""The package version (read by the kernel cache key and `rnncomp --version`)."""

__version__ = "0.1.0"
