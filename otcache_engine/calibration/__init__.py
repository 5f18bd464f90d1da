"""Calibration: what an uncached run records, its files, edge errors (local, hybrid, global) and the zero-call replay."""
