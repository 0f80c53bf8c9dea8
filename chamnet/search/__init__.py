"""Search: BO engine, samplers, oracles, baselines."""
