"""`python -m stream_hub`: the same as the `stream-hub` command."""

from .cli import main

raise SystemExit(main())
