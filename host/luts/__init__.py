"""LUTs: the Parquet look-up table of op measurements (:mod:`.lut`) and its life across files: merge,
validate, show and diff (:mod:`.lifecycle`).

Imports nothing else of ``chamlab.host`` but :mod:`~chamlab.host.devices` (a target's defaults)."""
