"""Print the status of the user's hub (exit code 1 when none runs).

    python scripts/stream_status.py [--json] [--rest-port 8890]

Thin wrapper over `stream-hub status`.
"""

import sys

from stream_hub.cli import main

if __name__ == "__main__":
    sys.exit(main(["status", *sys.argv[1:]]))
