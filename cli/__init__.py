"""``herd.cli``: the ``herd`` command and its benchmarks. It may import every layer; no layer
imports it."""
