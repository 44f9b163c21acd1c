from tegaki.cli import main

raise SystemExit(main())
