"""Ready-made schedules shipped with the pack (presets/<model>/<name>.json).

They are LeMiCa's published 50-step schedules (see scripts/make_presets.py for the table and its source).
Each model has a *reference* (its highest budget) and an *anchor* (its lowest), so OTCache Apply can
interpolate any budget in between before the user has calibrated anything.

Names as shown in the Load Schedule dropdown:

    preset:<model>/reference      the model's highest-budget schedule
    preset:<model>/anchor         the model's lowest-budget schedule
    preset:<model>/lemica-b<K>    every published budget K

This module never imports ComfyUI; a name is only ever looked up in the table built from the shipped
folder, never joined into a path, so a crafted name cannot read another file.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ...otcache_engine import Schedule, ScheduleError, schedule_io

PRESET_PREFIX = "preset:"
PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"


@dataclass(frozen=True)
class PresetModel:
    key: str                      # folder name, e.g. "flux1-dev"
    display: str                  # provenance "model", e.g. "FLUX.1-dev"
    files: tuple[str, ...]        # stems, highest budget first
    reference: str                # stem of the highest budget
    anchor: str                   # stem of the lowest budget


@lru_cache(maxsize=1)
def _catalog() -> tuple[dict[str, PresetModel], dict[str, Path]]:
    models: dict[str, PresetModel] = {}
    paths: dict[str, Path] = {}
    if not PRESETS_DIR.is_dir():
        return models, paths
    for folder in sorted(p for p in PRESETS_DIR.iterdir() if p.is_dir()):
        loaded = []
        for f in sorted(folder.glob("*.json")):
            s = schedule_io.load(f)  # shipped files: a broken one is a packaging bug and must be loud
            loaded.append((s.budget, f.stem, f, s))
        if not loaded:
            continue
        loaded.sort(key=lambda t: -t[0])
        key = folder.name
        display = str(loaded[0][3].provenance.get("model", key))
        models[key] = PresetModel(key, display, tuple(t[1] for t in loaded), loaded[0][1], loaded[-1][1])
        for _, stem, f, _ in loaded:
            paths[f"{key}/{stem}"] = f
        paths[f"{key}/reference"] = loaded[0][2]
        paths[f"{key}/anchor"] = loaded[-1][2]
    return models, paths


def preset_models() -> dict[str, PresetModel]:
    return dict(_catalog()[0])


def list_presets() -> list[str]:
    """Every preset name, ``preset:``-prefixed: per model reference, anchor, then each budget."""
    names = []
    for key, m in _catalog()[0].items():
        names += [f"{PRESET_PREFIX}{key}/reference", f"{PRESET_PREFIX}{key}/anchor"]
        names += [f"{PRESET_PREFIX}{key}/{stem}" for stem in m.files]
    return names


def is_preset(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PRESET_PREFIX)


def preset_path(name: str) -> Path:
    """The shipped file behind a preset name (with or without the ``preset:`` prefix)."""
    key = name[len(PRESET_PREFIX):] if is_preset(name) else name
    paths = _catalog()[1]
    if key not in paths:
        known = ", ".join(sorted(k for k in paths if k.endswith(("/reference", "/anchor"))))
        raise ScheduleError(f"unknown preset {name!r}; known presets include: {known}")
    return paths[key]


def load_preset(name: str) -> Schedule:
    """Load a preset; the role it was asked for (reference / anchor) is recorded in its provenance."""
    s = schedule_io.load(preset_path(name))
    key = name[len(PRESET_PREFIX):] if is_preset(name) else name
    role = key.rsplit("/", 1)[-1]
    if role in ("reference", "anchor"):
        s = s.with_provenance(role=role, preset=f"{PRESET_PREFIX}{key}")
    else:
        s = s.with_provenance(preset=f"{PRESET_PREFIX}{key}")
    return s


def preset_pair(model_key: str) -> tuple[Schedule, Schedule]:
    """(reference, anchor) of one model."""
    return load_preset(f"{model_key}/reference"), load_preset(f"{model_key}/anchor")
