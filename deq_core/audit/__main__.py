"""`python -m deq_core.audit` (also `deq-lens audit`): report, verify, verify-log."""

from deq_core.audit.cli import main

raise SystemExit(main())
