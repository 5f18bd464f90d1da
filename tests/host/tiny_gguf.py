"""A tiny GGUF diffusion-model file written with the ``gguf`` library, and the ComfyUI-GGUF pack to load it.

The file holds the same tensors as the tiny Wan checkpoint (``make_tiny_checkpoint.tiny_wan_state``): matrices
whose rows split into 32-value blocks quantised to Q8_0, everything else float32. GGUF tensors have at most
four dimensions, so larger ones (Wan's patch-embedding convolution) are stored flat with their shape under
``comfy.gguf.orig_shape.<name>``, the key the pack's loader reads back.

The pack (city96/ComfyUI-GGUF) is not ours and never part of this repository: it is found at
``COMFYUI_GGUF_PATH``, in the ComfyUI's ``custom_nodes`` folder or in ``~/comfy/custom_nodes_extra``, and imported the way ComfyUI imports a
custom node (its folder as a package); ``find_gguf_pack`` says why when it is not there.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import torch

PACK_DIRS = ("ComfyUI-GGUF", "comfyui-gguf", "ComfyUI_GGUF")
MODULE = "otcache_test_comfyui_gguf"


def write_gguf(state: dict[str, torch.Tensor], path: Path, arch: str = "wan") -> dict[str, str]:
    """Write ``state`` to ``path``; returns each tensor's stored type ("Q8_0" or "F32")."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    kinds = {}
    for name, tensor in state.items():
        value = tensor.float().numpy()
        if value.ndim == 2 and value.shape[1] % 32 == 0:
            q = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(value, q), raw_dtype=q)
            kinds[name] = "Q8_0"
            continue
        if value.ndim > 4:
            writer.add_array(f"comfy.gguf.orig_shape.{name}", list(value.shape))
            value = value.reshape(value.shape[0], -1)
        writer.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
        kinds[name] = "F32"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return kinds


def find_gguf_pack(comfy_dir: Path) -> tuple[Path | None, str]:
    """The ComfyUI-GGUF folder, or None and why it cannot be used."""
    env = os.environ.get("COMFYUI_GGUF_PATH")
    beside = Path.home() / "comfy" / "custom_nodes_extra"          # a checkout kept beside the hosts
    candidates = [Path(env).expanduser()] if env else [root / d for root in (comfy_dir / "custom_nodes", beside)
                                                        for d in PACK_DIRS]
    pack = next((c for c in candidates if (c / "nodes.py").is_file() and (c / "loader.py").is_file()), None)
    if pack is None:
        where = f"COMFYUI_GGUF_PATH={env}" if env else f"{comfy_dir / 'custom_nodes'} and {beside}"
        return None, f"the ComfyUI-GGUF pack (city96/ComfyUI-GGUF) is not installed (looked in {where})"
    if importlib.util.find_spec("gguf") is None:
        return None, "the gguf library is not installed (pip install gguf)"
    return pack, ""


def import_gguf_pack(pack: Path) -> Any:
    """The pack's package, imported once, as ComfyUI's custom-node loader would."""
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    spec = importlib.util.spec_from_file_location(MODULE, pack / "__init__.py", submodule_search_locations=[str(pack)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)
    return module
