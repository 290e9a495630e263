from deq_core.batch.cli import main

raise SystemExit(main())
