"""A real ComfyUI, importable and on CPU, for the scripts here (the host tests' own locator and set-up).

``tests/host/comfy_host.py`` finds the checkout (``COMFYUI_PATH``, the enclosing ``custom_nodes``, or
``~/comfy/ComfyUI``) and configures CPU mode before ``comfy.model_management`` is first imported.
"""
from __future__ import annotations

import comfy_host

COMFY_VERSION = comfy_host.ensure_comfy_importable()
