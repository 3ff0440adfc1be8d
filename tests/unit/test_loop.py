"""The loop thread's exception handler (stream_hub.runtime.loop)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from stream_hub.runtime.loop import _ResourceErrorFilter


def test_an_accept_retry_after_its_listener_closed_is_not_reported_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # After an accept fails for lack of descriptors, asyncio stops reading the
    # listener and schedules _start_serving to read it again; a server that
    # closes first leaves that retry to fail on the closed socket. Done here
    # as asyncio does it, with a closed listener, without exhausting anything.
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_ResourceErrorFilter())
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    async def main() -> None:
        server = await loop.create_server(asyncio.Protocol, sock=listener)
        server.close()
        await server.wait_closed()
        assert listener.fileno() == -1
        loop.call_soon(loop._start_serving, asyncio.Protocol, listener, None, server, 100)  # type: ignore[attr-defined]
        await asyncio.sleep(0)  # the retry runs

    try:
        with caplog.at_level(logging.DEBUG, logger="stream_hub.runtime.loop"):
            caplog.set_level(logging.DEBUG, logger="asyncio")
            loop.run_until_complete(main())
    finally:
        loop.close()
    assert "accept retry came after its listener closed" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_other_loop_errors_still_reach_asyncios_handler(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_ResourceErrorFilter())

    def fails() -> None:
        raise ValueError("a real bug")

    async def main() -> None:
        loop.call_soon(fails)
        await asyncio.sleep(0)

    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.run_until_complete(main())
    finally:
        loop.close()
    assert "a real bug" in caplog.text and "Exception in callback" in caplog.text
