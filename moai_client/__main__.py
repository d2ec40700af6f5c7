from moai_client.cli import main

raise SystemExit(main())
