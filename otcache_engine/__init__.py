"""OTCache engine: caching schedules for diffusion transformers.

Pure PyTorch/NumPy/SciPy/Optuna; it never imports ComfyUI, so it can be used
and tested on its own (``python -m otcache_engine``).
"""
from .errors import CalibrationError, InfeasibleBudgetError, OTCacheError, ScheduleError
from .schedules.schedule import Schedule
from .schedules import schedule_io

__all__ = ["Schedule", "schedule_io", "OTCacheError", "ScheduleError", "InfeasibleBudgetError", "CalibrationError"]
__version__ = "0.1.0"
