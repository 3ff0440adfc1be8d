"""stream_hub: stream live training metrics over SSE, WebSocket and REST from
one shared in-process server.

    from stream_hub import get_stream_server, release_stream_server

    server = get_stream_server()                 # +1 reference; starts on the first
    server.log({"loss": 0.12}, step=10, run="exp1")
    release_stream_server()                      # -1 reference; stops at zero
"""

from ._version import __version__ as __version__
from .config import StreamConfig
from .errors import ConfigError, LoopThreadError, PortInUseError, StreamHubError
from .manager import (
    Lease,
    StreamServerManager,
    get_stream_server,
    get_stream_server_manager,
    release_stream_server,
)
from .server import TrainingStreamServer

__all__ = [
    "ConfigError",
    "Lease",
    "LoopThreadError",
    "PortInUseError",
    "StreamConfig",
    "StreamHubError",
    "StreamServerManager",
    "TrainingStreamServer",
    "get_stream_server",
    "get_stream_server_manager",
    "release_stream_server",
]
