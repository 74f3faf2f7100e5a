"""``python -m scopecheck.cli``: the ``scopecheck`` command."""

import sys

from scopecheck.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
