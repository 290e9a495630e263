"""`python -m deq_core.robustness`: the command earlier notes and reports quote.

The code lives in ``deq_core.explain.robustness``; ``deq-lens robustness`` runs the same command.
"""

from deq_core.explain.robustness import main

if __name__ == "__main__":
    raise SystemExit(main())
