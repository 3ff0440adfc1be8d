"""What finding a connection's peer user costs: the netlink ``sock_diag``
lookup :mod:`stream_hub.transports.peer_uid` makes once per accepted
connection on a loopback bind, beside the usual alternative — reading
``/proc/net/tcp`` and finding the line of the 4-tuple (its ``uid`` column) —
with only the measured connection open, then with more idle ones beside it
(``/proc/net/tcp`` lists every socket; the kernel's lookup is a hash).

    python -m benchmarks.peer_uid [--rounds 2000] [--idle 0,1000]

Prints the median and 90th percentile, in microseconds, of each. Linux only.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator

from stream_hub.transports.peer_uid import can_tell_peer_uid, peer_uid


def proc_net_tcp_uid(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The baseline: the uid of the socket whose own address is ``remote`` and
    whose peer is ``local`` (IPv4), found by reading ``/proc/net/tcp``."""

    def hexed(address: tuple[str, int]) -> str:
        packed = socket.inet_aton(address[0])
        return f"{int.from_bytes(packed, 'little'):08X}:{address[1]:04X}"

    wanted_local, wanted_remote = hexed(remote), hexed(local)
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == wanted_local and fields[2] == wanted_remote:
                return int(fields[7])
    return None


@contextlib.contextmanager
def connections(idle: int) -> Iterator[socket.socket]:
    """A listener, ``idle`` idle connections to it, and one more: its accepted side."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=idle + 16)
    opened: list[socket.socket] = [listener]
    try:
        for _ in range(idle + 1):
            client = socket.create_connection(listener.getsockname())
            accepted, _ = listener.accept()
            opened += [client, accepted]
        yield opened[-1]
    finally:
        for sock in opened:
            sock.close()


def timed(lookup: Callable[[], object], rounds: int) -> list[float]:
    for _ in range(min(100, rounds)):  # warm up
        lookup()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        lookup()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="lookups per figure (default 2000)")
    parser.add_argument("--idle", default="0,1000", help="idle connections beside it (default 0,1000)")
    args = parser.parse_args()
    if not can_tell_peer_uid():
        print("this platform does not tell a connection's peer user (netlink sock_diag)", file=sys.stderr)
        return 1
    print(f"{'idle connections':>16}  {'method':<22}{'median µs':>10}{'p90 µs':>10}")
    for idle in (int(n) for n in args.idle.split(",")):
        with connections(idle) as accepted:
            local, remote = accepted.getsockname(), accepted.getpeername()
            assert peer_uid(local, remote) == proc_net_tcp_uid(local, remote)
            methods: tuple[tuple[str, Callable[..., object]], ...] = (
                ("sock_diag (ours)", peer_uid),
                ("/proc/net/tcp (base)", proc_net_tcp_uid),
            )
            for name, method in methods:
                samples = sorted(timed(functools.partial(method, local, remote), args.rounds))
                p90 = samples[int(len(samples) * 0.9)]
                print(f"{idle:>16}  {name:<22}{statistics.median(samples):>10.1f}{p90:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
