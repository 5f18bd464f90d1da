"""Measured choices: the judge, sampling on calibration pairs, calibration records and data, the reuse-operator choice, the validation ladder, LPIPS weights."""
