"""Soak test: stalled and healthy clients, a hostile publisher and restarts.

    python scripts/soak.py --minutes 10     # the hardening issue's soak
    python scripts/soak.py --minutes 1      # a quick run

Not part of the pytest suite. Real processes talk over real sockets:

- **hub** (the "training process"): ``get_stream_server`` on ports 0, a
  training thread logging ``--rate`` metric events/s over ``--runs`` runs,
  ``force_restart()`` every ``--restart-interval`` s, its own RSS sampled every
  second (psutil).
- **healthy** (``--healthy-procs`` processes): ``--healthy`` clients, half SSE
  (``GET /events``, resuming with ``Last-Event-ID``), half WebSocket (the
  subscription in the URL, ``/?since=N&epoch=E``). Each reads everything and
  checks every seq as it comes, across every reconnect: from its first seq to
  the final head, each exactly once and in increasing order.
- **stalled**: ``--stalled`` clients, half SSE, half WebSocket, that resume from
  seq 1 with a small ``SO_RCVBUF`` and never read. Whether the server closed
  one is read from the kernel (the server's end of the connection leaves
  ``ESTABLISHED`` in ``/proc/net/tcp``), without reading a byte; a closed one
  is replaced at once, so about ``--stalled`` exist at all times.
- **hostile**: cross-site ``text/plain`` posts, 1 MiB bodies of
  ``{"data": [{}, {}, ...]}``, posts inventing runs x metrics past
  ``max_series``, a foreign ``Host``, cross-site WebSocket handshakes,
  malformed JSON, an oversized body, and slowloris connections trickling a
  request a byte at a time on all three ports.
- **orchestrator** (this command): starts them, runs for ``--minutes``, stops
  everything in order, checks, prints a table; exit code 0 only if every check
  passes.

Telling evictions from restarts: a restart closes every connection too, and
those closes are not evictions. The hub process wraps its server's
``clients.evict`` (instrumentation only, nothing in ``stream_hub`` changes) to
record the time, server port and client port of each eviction it counts (a
client port is unique only per server port), and records the window ``[start,
end]`` of every ``force_restart()``. A stalled connection seen closed is
*evicted* if an eviction of it falls between its connect and the moment the
close was seen, *closed by a restart* if it was seen closed during a restart
window, and otherwise a finding (the server closed it while serving without
counting it). ``clients.evicted`` must equal the number of evictions recorded,
and every recorded eviction must belong to a client of ours.

The settings, and why: ``send_timeout`` 2 s, so a stalled client can be evicted
between two restarts 5 s apart; ``handshake_timeout`` 3 s, so slowloris
connections meet it between restarts; ``shutdown_timeout`` 1 s, the bound of
a restart whose clients do not all read (stalled clients themselves are not
waited for: a restart drops them at once); ``history_bytes`` 32 MiB (below).
The hub's loop responsiveness is measured from outside (``GET /health`` every
100 ms), its GC pauses from inside (``gc.callbacks``), kernel TCP memory from
``/proc/net/sockstat`` (stalled clients' data waits in the server's socket send
buffers, outside RSS). Every process's log and the raw reports
(``reports.json``) are kept in ``--log-dir``.

Before the load, the same run measures the hub idle, so that the loaded
figures can be read against it on a machine whose load varies: ``/health``
probed for ``--idle-seconds`` (its median and p99 are printed beside the
loaded ones), then ``--idle-restarts`` restarts with no client (their median
beside the restarts under load). The load average before and after the load
is printed with the table. The hub tunes its garbage collector as
``stream-hub serve`` does (``--default-gc`` leaves it alone).

The RSS bound (``rss_bound``) is the hub's RSS once started, plus what each
bounded structure may hold in this soak::

    history       1.5 x history_bytes   (32 MiB here, lowered from the 64 MiB
                                         default; the ring charges each event
                                         the size of its three encodings + 300 B;
                                         x1.5 for object headers and malloc slack)
    series        runs x 4 metrics x 80 KiB (a full 1000-point curve measures
                  ~73 KiB) + max_series x 1 KiB (a one-point curve ~0.6 KiB)
    clients       (stalled + healthy + slowloris + 16) x 1.125 x
                  (64 KiB high-water mark + one chunk): a writer waits while
                  the transport is paused, so at most one chunk beyond the
                  mark; a chunk is <= 256 KiB or one event, and the hostile
                  publisher's events are ~1 MiB, so a chunk is <= 1 MiB + 1 KiB;
                  x1.125 for bytearray over-allocation
    chunk cache   65 x that chunk (the ring's joined-chunk cache)
    backfill      16 MiB (frames of archived events kept for clients resuming
                  from the same old seq: Hub.backfill_chunk)
    ingest        32 MiB (one 1 MiB body of "{}"s parses into ~350 000 dicts,
                  ~24 MiB, while it is checked)
    slack         64 MiB (malloc arenas of five threads, fragmentation)

The bound holds with glibc's mmap threshold fixed at 128 KiB, as
``stream-hub serve`` fixes it (:mod:`stream_hub.runtime.memory`; the hub
process here does the same). ``--default-malloc`` leaves it dynamic: glibc
then keeps freed buffers of up to the largest one freed (a 1 MiB event) in
the heap, and RSS is reported without a bound.

The modules, by process and by idea:

- :mod:`benchmarks.soak.common` -- ``Params`` (sent to every child as JSON),
  the JSON lines the processes talk in, reconnect backoff.
- :mod:`benchmarks.soak.hub` -- the hub process (training thread, restarter,
  RSS sampler, the eviction and restart records).
- :mod:`benchmarks.soak.healthy`, :mod:`benchmarks.soak.stalled`,
  :mod:`benchmarks.soak.hostile` -- the load: one module per kind of client.
- :mod:`benchmarks.soak.orchestrate` -- the child processes, the run from
  start to stop, the reports.
- :mod:`benchmarks.soak.analysis` -- the RSS bound, restart windows, every
  check and the table.

``scripts/soak.py`` parses the command line and calls into them.
"""
