"""Follow a hub from another program: ``follow()`` (a blocking iterator) and
``afollow()`` (an asynchronous one) over SSE or WebSocket, with reconnection,
exact resume and clear errors built in.

    from stream_hub.client import follow

    for event in follow("http://127.0.0.1:8888", types="metric"):
        print(event["run"], event["step"], event["metrics"])

    for event in follow(types="metric"):  # no URL: the user's hub, wherever it is
        ...

Every event arrives once, in seq order, across dropped connections and hub
restarts; a stretch the hub no longer has arrives as a ``gap`` event. The
iteration ends when the hub stops cleanly (or waits for it to come back, with
``on_shutdown="wait"``). Without a URL, the hub is found as every command
finds it (:mod:`.discovery`).
"""

from .asyncio import AsyncSubscription, afollow
from .discovery import FoundHub, afind_hub, find_hub
from .follow_errors import FollowError, FollowTimeout, HubNotFound, HubRefused, HubUnreachable, NotAHub
from .sync import Subscription, follow

__all__ = [
    "AsyncSubscription",
    "FollowError",
    "FollowTimeout",
    "FoundHub",
    "HubNotFound",
    "HubRefused",
    "HubUnreachable",
    "NotAHub",
    "Subscription",
    "afind_hub",
    "afollow",
    "find_hub",
    "follow",
]
