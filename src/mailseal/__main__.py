"""``python -m mailseal``."""

from mailseal.cli.main import main

raise SystemExit(main())
