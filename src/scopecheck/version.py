"""The package version (``scopecheck.__version__``), in a module of its own so that any layer may
read it without importing the package root (which loads the command line).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
