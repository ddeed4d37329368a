from batchscale.cli import main

raise SystemExit(main())
