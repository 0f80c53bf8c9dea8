"""Measurement: the one pipeline (resolve -> export -> run -> parse), ``profile`` of ops into a LUT,
whole-network and program measurement, ETDump parsing and power traces.

Imports :mod:`~chamlab.host.devices` and :mod:`~chamlab.host.luts`, nothing above them."""
