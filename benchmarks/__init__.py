"""Benchmarks of stream_hub against the hub a user would write by hand.

``scripts/bench.py`` drives everything. The pieces:

- :mod:`benchmarks.baseline` -- the obvious hand-written hub (FastAPI +
  sse-starlette + a queue per client + ``call_soon_threadsafe`` per event,
  uvicorn in a thread, plus a ``websockets`` face).
- :mod:`benchmarks.sides` -- one small start/log/restart/stop interface over
  stream_hub and the baseline, so every figure measures both the same way.
- :mod:`benchmarks.clients` -- the load generator: raw non-blocking SSE and
  WebSocket clients in a selector loop, in a process of its own.
- :mod:`benchmarks.wire` -- its I/O-free half: requests, response heads,
  chunked decoding, SSE and WebSocket frame counting.
- :mod:`benchmarks.figures` -- the measurements; :mod:`benchmarks.probes`
  checks a server is serving or gone; :mod:`benchmarks.runner` runs each
  figure for each side in a fresh process; :mod:`benchmarks.training` is
  the stand-in training step the slowdown figures time.
- :mod:`benchmarks.process_figures` -- many processes, one hub: joined
  publish cost, ingest from four processes, training with the hub in
  process or in a ``stream-hub serve`` (:mod:`benchmarks.served`).
- :mod:`benchmarks.store` -- the durable store's figures (stream_hub with a
  store against stream_hub without; no baseline); :mod:`benchmarks.groups`
  -- every figure group.
- :mod:`benchmarks.report` -- targets, the table and the JSON file.
- :mod:`benchmarks.soak` -- the soak (``scripts/soak.py``): stalled, healthy
  and hostile clients against a restarting hub for minutes; not a figure.
"""
