"""What one OTCache Apply decided, as the installed wrappers find it: the options and the config.

Both the installation (``patcher``) and the per-call run (``run``) need these, so they live apart from
either. The config is the only thing OTCache puts into ``model_options``: immutable, shared by every
copy of the model options, and carrying a token that tells our block patches from anyone else's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...otcache_engine import Schedule
from ...otcache_engine.errors import OTCacheError
from ...otcache_engine.runtime.reuse import NAMES as REUSE_NAMES, TAYLOR_ORDERS, ReuseOperator
from .families import FamilySpec
from .resolver import BudgetRequest

CONFIG_KEY = "otcache"
WRAPPER_KEY = "otcache"
CACHE_DEVICES = ("auto", "compute device", "cpu offload")


@dataclass(frozen=True)
class PatchOptions:
    """How to cache: the reuse operator (omnicache's gamma, taylor's order) of a schedule given as it is (a
    ``BudgetRequest`` carries its own), where caches live, the log label."""

    reuse: str = "residual"
    gamma: float = 0.5
    order: int = 2            # taylor only (1 or 2; 0 = its default); what a measured Operator carries
    space: str = ""           # omnicache / taylor only: "" = the family's cache space, "output" = the output
    cache_device: str = "auto"
    label: str = "OTCache"
    always_on: bool = False   # keep caching on when every step computes (benchmarks, tests)

    def __post_init__(self) -> None:
        if self.reuse not in REUSE_NAMES:
            raise OTCacheError(f"unknown reuse operator {self.reuse!r}; choose one of {list(REUSE_NAMES)}")
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order not in (0,) + TAYLOR_ORDERS:
            raise OTCacheError(f"order must be one of {list(TAYLOR_ORDERS)} (taylor's forecast), got {self.order!r}")
        if self.space not in ("", "residual", "output"):
            raise OTCacheError(f"unknown cache space {self.space!r}; choose 'residual' or 'output'")
        if self.cache_device not in CACHE_DEVICES:
            raise OTCacheError(f"unknown cache device {self.cache_device!r}; choose one of {list(CACHE_DEVICES)}")


class OTCacheConfig:
    """What one OTCache Apply decided; immutable, shared by every copy of the model options.

    ComfyUI v0.3.64 deep-copies ``model_options`` on ``clone()``; copying returns the object
    itself, so every clone of the patched model refers to the same config (and its token).
    It holds either the fixed ``schedule`` of a connected source or the ``recipe`` that makes each run's
    schedule from the run's own step count (nothing connected), never both: ``resolver.plan_run`` takes
    whichever is there.
    """

    __slots__ = ("token", "schedule", "recipe", "description", "family", "reuse", "free_reuse", "cache_device",
                 "label", "num_patches", "always_on", "base_dit")

    def __init__(self, planned: Schedule | BudgetRequest, description: str, family: FamilySpec,
                 reuse: ReuseOperator, opts: PatchOptions, num_patches: int) -> None:
        self.token = object()
        self.schedule = planned if isinstance(planned, Schedule) else None
        self.recipe = planned if isinstance(planned, BudgetRequest) else None
        self.description = description
        self.family, self.reuse, self.cache_device = family, reuse, opts.cache_device
        self.free_reuse: ReuseOperator | None = None   # the free default's, for runs that take it instead
        self.label, self.num_patches, self.always_on = opts.label, num_patches, opts.always_on
        self.base_dit: dict = {}   # block replacements already on the model (whole-model reuse keeps them)

    def __copy__(self) -> "OTCacheConfig":
        return self

    def __deepcopy__(self, memo: dict) -> "OTCacheConfig":
        return self

    @property
    def planned(self) -> Schedule | BudgetRequest:
        return self.schedule if self.schedule is not None else self.recipe


def patched_config(model: Any) -> OTCacheConfig | None:
    """The OTCache config a model carries, if any (for the run's wrappers, other nodes and tests)."""
    cfg = model.model_options.get("transformer_options", {}).get(CONFIG_KEY)
    return cfg if isinstance(cfg, OTCacheConfig) else None
