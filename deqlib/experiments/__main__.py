"""``python -m deqlib.experiments``: see :func:`deqlib.experiments.main`."""

from .cli import main

main()
