"""Benchmarks run by ``saodf bench``; each module ``bench/<name>.py`` is one benchmark.

Contract (checked by :func:`saodf.bench.validate_result`). A benchmark module defines::

    def run(settings: saodf.config.Settings, quick: bool) -> dict

and returns a dict with exactly these keys:

- ``figures``: ``{name: number}``, the measured values, with the unit in each name
  (``train_seconds``, ``produce_msgs_per_s``, ``p99_ms``);
- ``reference``: ``{name: number}``, a reference measured in the same run on the same
  machine (for example a plain pandas read of the same data), or ``{}``;
- ``ratios``: ``{name: number}``, figures divided by references, the direction in the
  name (``pipeline_over_raw_read``), or ``{}``;
- ``goals``: ``{name: {"target", "measured", "met", "direction"}}`` with ``direction``
  ``"max"`` (higher is better) or ``"min"``; build entries with :func:`saodf.bench.goal`;
- ``notes``: a list of strings stating the inputs and what limits the figures.

Numbers are ints or floats; NaN is written as null. A benchmark starts the services it
needs on free 127.0.0.1 ports (:func:`saodf.bench.local_services` does this) and stops
them before returning. ``quick=True`` selects a small input that runs in about a minute.
The harness runs each benchmark in a child process with a time limit and writes
``bench/out/<name>-<UTC time>.json`` plus a record in ``bench/RESULTS.md``.
"""
