"""What every OTCache node shares: the socket types it passes along, and the inputs and input helpers
of the nodes that sample (Calibrate, Anchor Search). No node imports another node's file; they import this.
"""
from __future__ import annotations

import re

from comfy_api.latest import io

from ..otcache_engine.errors import CalibrationError

ScheduleType = io.Custom("OTCACHE_SCHEDULE")
CalibrationType = io.Custom("OTCACHE_CALIBRATION")
MAX_SEEDS = 64
MAX_SEED = 2 ** 64 - 1  # ComfyUI's seed input range; torch.manual_seed overflows above it


def sampler_inputs() -> list:
    """KSampler's inputs, same names and defaults, so a KSampler converts in one move."""
    import comfy.samplers
    return [
        io.Model.Input("model", tooltip="The model to calibrate (never modified)."),
        io.Conditioning.Input("positive"),
        io.Conditioning.Input("negative"),
        io.Latent.Input("latent_image", tooltip="Calibrate at the resolution (and frame count) you will use."),
        io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True),
        io.Int.Input("steps", default=20, min=3, max=10000),
        io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS),
        io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01),
    ]


def parse_seeds(text: str, seed: int) -> list[int]:
    """The sampler seed plus extra seeds: ``"0, 1, 2"`` adds those; ``"x4"`` means 4 runs, seed .. seed+3.

    Only ASCII digits count ("x²" is a superscript, not a 2) and every seed must fit ComfyUI's seed range,
    which is what torch's generator accepts."""
    text = (text or "").strip()
    if not text:
        return [seed]
    count = re.fullmatch(r"[xX*]\s*([0-9]+)", text)
    if count:
        digits = count.group(1)
        if len(digits) > 3 or not 1 <= int(digits) <= MAX_SEEDS:
            raise CalibrationError(f"calibration runs must be between 1 and {MAX_SEEDS}, got {digits[:8]}")
        return [_seed_in_range(seed + k) for k in range(int(digits))]
    seeds = [seed]
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        if not part:
            continue
        if not re.fullmatch(r"[0-9]+", part):
            raise CalibrationError(f"calibration seeds must be integers separated by commas (e.g. '0, 1, 2') "
                                   f"or a count like 'x4'; got {part[:24]!r}")
        value = _seed_in_range(int(part) if len(part) <= 20 else MAX_SEED + 1, part)
        if value not in seeds:
            seeds.append(value)
    if len(seeds) > MAX_SEEDS:
        raise CalibrationError(f"at most {MAX_SEEDS} calibration seeds, got {len(seeds)}")
    return seeds


def _seed_in_range(value: int, text: str = "") -> int:
    if not 0 <= value <= MAX_SEED:
        shown = text if text and len(text) <= 24 else (f"a {len(text)}-digit number" if text else str(value))
        raise CalibrationError(f"calibration seeds must be between 0 and 2^64-1 (ComfyUI's seed range), got {shown}")
    return value
