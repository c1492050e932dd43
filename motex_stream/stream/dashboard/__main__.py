"""``python -m motex_stream.stream.dashboard ADDR``."""

from motex_stream.stream.dashboard import main

raise SystemExit(main())
