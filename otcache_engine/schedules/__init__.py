"""Schedules: the value, its file format, warps, projection, interpolation, graph search, OmniCache and the baselines."""
