"""chamlab.host: the controller (CLI, device registry, transports, profiling sessions, LUT store)."""
