"""Devices: the lab's registry (devices.toml), the transports that reach a target (local, ssh, adb),
``devices --check`` probes, and resumable device sessions with their target-side locks.

Bottom layer of the host: imports nothing else of ``chamlab.host``."""
