from crosswalk.cli import main

raise SystemExit(main())
