"""ablab: disciplined research on tiny language models.

    import ablab
    lab = ablab.Lab("my-lab")          # the Python API (ablab.api); docs/api.md walks through it
"""

import importlib

__version__ = "0.1.0"


def __getattr__(name: str):
    # The API loads the trainer (and torch) on first use, not on `import ablab`: every module imports
    # the package for its version, and the command line's start-up and the report layer stay light.
    if name in ("Lab", "Study", "Runs", "BaselineHandle"):
        return getattr(importlib.import_module("ablab.api"), name)
    raise AttributeError(f"module 'ablab' has no attribute '{name}'")
