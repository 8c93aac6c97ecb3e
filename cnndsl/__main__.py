from cnndsl.cli import main

raise SystemExit(main())
