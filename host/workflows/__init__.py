"""Workflows: what the user runs end to end over the layers below: ``search``, ``adapt`` (and its
verify-and-refine step), ``measure`` against a prediction, and farm runs.

The top layer under :mod:`chamlab.host.api`; nothing below imports it."""
