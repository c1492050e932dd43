"""Allow ``python -m motex_stream``."""

from motex_stream.cli import main

raise SystemExit(main())
