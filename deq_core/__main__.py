"""`python -m deq_core`: the `deq-lens` command, for when the console script is not on PATH."""

from deq_core.cli import main

raise SystemExit(main())
