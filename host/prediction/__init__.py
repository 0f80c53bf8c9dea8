"""Prediction: latency and energy of whole networks from a LUT (:mod:`.predict`), the op-level model's
use (:mod:`.op_values`), the stored calibration records (:mod:`.records`), ``calibrate``
(:mod:`.calibrate`, which measures networks) and adaptive profiling (:mod:`.adaptive`).

Imports :mod:`~chamlab.host.devices`, :mod:`~chamlab.host.luts` and :mod:`~chamlab.host.measurement`."""
