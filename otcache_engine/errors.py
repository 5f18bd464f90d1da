"""Error types of the engine.

Every error a user can cause carries a one-line, actionable message so that the
CLI and the ComfyUI nodes can show it as is, without a traceback.
"""


class OTCacheError(ValueError):
    """Base class of every user-facing engine error."""


class ScheduleError(OTCacheError):
    """A schedule (value or file) is malformed or does not fit where it is used."""


class InfeasibleBudgetError(OTCacheError):
    """No schedule with the asked number of computed steps satisfies the constraints."""

    def __init__(self, message: str, smallest_feasible: int | None = None):
        super().__init__(message)
        self.smallest_feasible = smallest_feasible


class CalibrationError(OTCacheError):
    """Calibration data is missing, inconsistent or does not match its use."""
