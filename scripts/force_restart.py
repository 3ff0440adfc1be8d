"""Force a running hub to restart in place (history and references kept).

    STREAM_HUB_ADMIN_TOKEN=... python scripts/force_restart.py [--rest-port 8890]

Thin wrapper over `stream-hub restart`.
"""

import sys

from stream_hub.cli import main

if __name__ == "__main__":
    sys.exit(main(["restart", *sys.argv[1:]]))
