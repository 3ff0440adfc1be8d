"""Print the status of a running hub (exit code 2 when none answers).

    python scripts/stream_status.py [--json] [--rest-port 8890]

Thin wrapper over `stream-hub status`.
"""

import sys

from stream_hub.cli import main

if __name__ == "__main__":
    sys.exit(main(["status", *sys.argv[1:]]))
