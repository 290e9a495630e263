"""`python -m deq_core.faithfulness`: the command earlier notes and reports quote.

The code lives in ``deq_core.explain.faithfulness``; ``deq-lens faithfulness`` runs the same command.
"""

from deq_core.explain.faithfulness import main

if __name__ == "__main__":
    raise SystemExit(main())
