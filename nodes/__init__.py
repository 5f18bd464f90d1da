"""The pack's ComfyUI nodes. To add one, import its class here and append it to ``NODE_CLASSES``."""
from .anchor_node import AnchorSearch
from .apply_node import OTCacheApply
from .calibrate_node import Calibrate
from .save_load_nodes import LoadSchedule, SaveSchedule

NODE_CLASSES: list[type] = [
    OTCacheApply,
    SaveSchedule,
    LoadSchedule,
    Calibrate,
    AnchorSearch,
]
