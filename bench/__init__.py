"""The benchmarks (docs/benchmarks.md): run each from the repository root as ``python -m bench.NAME``;
``python -m bench.report`` rewrites docs/benchmarks.md from the stored results in bench/results/.

A package of its own, outside the distribution: the scripts share ``bench._common`` and import each
other's helpers as ``bench.NAME``, and the real peers of the tests as ``tests.peers``."""
