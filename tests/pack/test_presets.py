"""Shipped presets: LeMiCa's published schedules, as reference/anchor pairs per model."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from otcache_pure.nodes.runtime import presets
from otcache_pure.otcache_engine import ScheduleError, schedule_io

ROOT = Path(__file__).resolve().parents[2]


def _make_presets():
    spec = importlib.util.spec_from_file_location("make_presets", ROOT / "scripts" / "make_presets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_files_match_the_published_table():
    built = _make_presets().build()
    assert set(built) == {"flux1-dev", "qwen-image", "wan2.1-t2v-1.3b", "hunyuanvideo-1.5"}
    for key, files in built.items():
        on_disk = sorted(p.stem for p in (ROOT / "presets" / key).glob("*.json"))
        assert on_disk == sorted(files), key
        for stem, sched in files.items():
            loaded = schedule_io.load(ROOT / "presets" / key / f"{stem}.json")
            assert loaded.to_dict() == sched.to_dict()


@pytest.mark.parametrize("key, budgets", [
    ("flux1-dev", [26, 20, 15, 10]), ("qwen-image", [25, 17, 10]),
    ("wan2.1-t2v-1.3b", [25, 20, 17, 14]), ("hunyuanvideo-1.5", [25, 20, 15, 10])])
def test_reference_is_highest_and_anchor_lowest_budget(key, budgets):
    ref, anc = presets.preset_pair(key)
    assert (ref.budget, anc.budget) == (max(budgets), min(budgets))
    assert ref.num_steps == anc.num_steps == 50
    assert ref.compute_steps[0] == 0 and ref.compute_steps[-1] == 49
    assert ref.provenance["role"] == "reference" and anc.provenance["role"] == "anchor"
    names = presets.list_presets()
    for b in budgets:
        assert f"preset:{key}/lemica-b{b}" in names
    assert f"preset:{key}/reference" in names and f"preset:{key}/anchor" in names


def test_provenance_names_the_source_and_citation():
    for name in presets.list_presets():
        s = presets.load_preset(name)
        p = s.provenance
        assert p["source"] == "LeMiCa released schedule"
        assert "arXiv:2511.00090" in p["citation"]
        assert p["budget"] == s.budget and p["steps"] == 50 and p["model"]
        assert p["preset"] == name


def test_flux_reference_is_lemica_b26():
    s = presets.load_preset("preset:flux1-dev/reference")
    assert list(s.compute_steps) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 18, 20, 25, 30, 35, 39, 42,
                                     44, 45, 46, 47, 48, 49]


@pytest.mark.parametrize("bad", ["preset:../../etc/passwd", "preset:flux1-dev/../qwen-image/reference",
                                 "preset:flux1-dev/lemica-b99", "preset:", "preset:nope/reference",
                                 "/etc/passwd"])
def test_unknown_or_path_like_names_are_refused(bad):
    with pytest.raises(ScheduleError, match="unknown preset"):
        presets.load_preset(bad)


def test_files_are_plain_versioned_json():
    for f in (ROOT / "presets").rglob("*.json"):
        data = json.loads(f.read_text())
        assert data["format"] == "otcache.schedule" and data["version"] == 1 and data["kind"] == "preset"
