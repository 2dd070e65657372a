from labutils.cli import main

raise SystemExit(main())
