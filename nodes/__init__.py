"""The pack's ComfyUI nodes. To add one, import its class here and append it to ``NODE_CLASSES``."""
from .apply_node import OTCacheApply
from .schedule_nodes import LoadSchedule, SaveSchedule

NODE_CLASSES: list[type] = [
    OTCacheApply,
    SaveSchedule,
    LoadSchedule,
]
