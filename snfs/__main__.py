from snfs.cli import main

raise SystemExit(main())
