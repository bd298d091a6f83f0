"""`python -m ralph.testing`: the same as `python -m ralph.testing.fake_server`."""

from ralph.testing.fake_server import main

raise SystemExit(main())
