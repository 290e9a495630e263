"""`python -m deq_core.stability`: is each decision's fixed point stable, and the only one found?

The code lives in ``deq_core.explain.stability``; ``deq-lens stability`` runs the same command.
"""

from deq_core.explain.stability import main

if __name__ == "__main__":
    raise SystemExit(main())
