"""``stream-hub ports``: are the three ports free, who holds them, and (in
development, when asked) free them."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import StreamHubError
from .common import EXIT_ERROR, EXIT_OK, client_config

__all__ = ["cmd_ports"]


def cmd_ports(args: argparse.Namespace) -> int:
    from .. import ports as port_tools

    cfg = client_config(args)
    if args.free:
        if port_tools.is_production():
            print(
                "stream-hub ports --free: refused, ENVIRONMENT=production; stop the holders "
                "by hand (see below)",
                file=sys.stderr,
            )
            print(port_tools.format_ports_report(port_tools.ports_report(cfg)), file=sys.stderr)
            return EXIT_ERROR
        manager = port_tools.PortManager(cfg.host, "auto")
        try:
            manager.resolve({"sse": cfg.sse_port, "ws": cfg.ws_port, "rest": cfg.rest_port})
        except StreamHubError as exc:
            print(f"stream-hub ports --free: {exc}", file=sys.stderr)
            return EXIT_ERROR
    rows = port_tools.ports_report(cfg)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(port_tools.format_ports_report(rows))
    return EXIT_OK
