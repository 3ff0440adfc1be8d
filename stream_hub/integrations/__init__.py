"""Bridges from the tools training code already uses to a stream_hub hub,
each a one-line change and each importable without its framework:

- :mod:`.tensorboard` — ``SummaryWriter``: every method of TensorBoard's,
  scalars, histograms and images streamed, the rest warned once (real event
  files too with ``also_tensorboard=``);
- :mod:`.logging` — ``capture()``: log records as ``log`` events, rate-limited,
  the console untouched (or ``StreamHandler`` on the loggers you choose);
- :mod:`.transformers` — ``StreamHubCallback``, a Hugging Face ``TrainerCallback``;
- :mod:`.lightning` — ``StreamHubLogger``, a Lightning ``Logger``, rank-aware.

A framework is imported only when its bridge needs it; a missing one raises
an ``ImportError`` that names the extra to install (``pip install
'stream_hub[transformers]'``).
"""
