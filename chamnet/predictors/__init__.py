"""Predictors: latency (LUT), later energy and accuracy."""
