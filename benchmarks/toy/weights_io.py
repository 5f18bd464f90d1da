"""Load the bundled toy DiT (safetensors weights + JSON config beside them)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .model import ToyDiT, ToyDiTConfig

BUNDLED = Path(__file__).with_name("weights") / "toy_dit.safetensors"


def load_meta(weights: str | Path = BUNDLED) -> dict:
    return json.loads(Path(weights).with_suffix(".json").read_text(encoding="utf-8"))


def load_model(weights: str | Path = BUNDLED) -> ToyDiT:
    """The model in float32, eval mode, gradients off (weights are stored as float16)."""
    from safetensors.torch import load_file
    weights = Path(weights)
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: toy model weights not found; train them with "
                                "`python -m benchmarks.toy.train`")
    config = ToyDiTConfig(**load_meta(weights)["model"])
    model = ToyDiT(config)
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)
