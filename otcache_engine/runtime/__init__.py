"""Cache runtime shared by the ComfyUI nodes and the bundled demo model (no ComfyUI import here)."""
from .reuse import CacheEntry, OmniCacheOperator, ReuseOperator, TaylorOperator, make_reuse
from .session import CacheSession, Decision
from .step_plan import StepPlan

__all__ = ["StepPlan", "CacheSession", "Decision", "ReuseOperator", "OmniCacheOperator", "TaylorOperator",
           "CacheEntry", "make_reuse"]
