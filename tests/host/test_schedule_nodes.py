"""OTCache Save / Load Schedule against the real folder_paths: round trips, presets, hostile input."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import folder_paths  # noqa: E402

from otcache_pack.nodes import save_load_nodes as SN  # noqa: E402
from otcache_pack.nodes.measure.calibration_data import CalibrationData  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402
from otcache_pack.otcache_engine.calibration.calibration_run import CalibrationRun  # noqa: E402
from otcache_pack.otcache_engine.errors import ScheduleError  # noqa: E402


@pytest.fixture
def otcache_dir(tmp_path, monkeypatch):
    """models/otcache inside a temporary models folder, so no test writes into the ComfyUI checkout."""
    models = tmp_path / "models"
    folder = models / "otcache"
    monkeypatch.setattr(folder_paths, "models_dir", str(models))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "otcache", ([str(folder)], set()))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    SN.register_folder()
    return folder


def schedule() -> Schedule:
    return Schedule(10, (0, 1, 2, 4, 6, 9), kind="reference", sigmas=tuple(np.linspace(1, 0, 11)),
                    provenance={"model_family": "flux", "model_hash": "abc", "steps": 10})


def calibration() -> CalibrationData:
    g = torch.Generator().manual_seed(0)
    sig = torch.linspace(1, 0, 11)
    run = CalibrationRun(sigmas=sig, latents=torch.randn(11, 4, 2, 2, generator=g),
                         outputs=torch.randn(10, 4, 2, 2, generator=g), meta={"seed": 0})
    w = np.full((10, 11), np.inf)
    for i in range(10):
        for j in range(i + 1, min(i + 4, 10)):
            w[i, j] = 0.0 if j == i + 1 else float(j - i) / 10
    return CalibrationData((run,), w, schedule(), {"error_mode": "local", "max_gap": 3, "objective": "leximax"})


def test_folder_is_registered_and_filtered_to_json(otcache_dir):
    paths, exts = folder_paths.folder_names_and_paths["otcache"]
    assert paths[0] == str(otcache_dir) and exts == {".json"}
    otcache_dir.mkdir(parents=True, exist_ok=True)
    (otcache_dir / "a.json").write_text(SN.schedule_io.dumps(schedule()))
    (otcache_dir / "a.calib.safetensors").write_bytes(b"x")
    (otcache_dir / "notes.txt").write_text("x")
    assert SN.schedule_files() == ["a.json"]


def test_save_load_round_trip_with_calibration(otcache_dir):
    out = SN.SaveSchedule.execute(schedule(), "flux ref-28", overwrite=False, calibration=calibration())
    assert (otcache_dir / "flux ref-28.json").is_file()
    assert (otcache_dir / "flux ref-28.calib.safetensors").is_file()
    assert out.ui["otcache_saved"] == ["flux ref-28.json"]
    assert out.ui["otcache_schedule"][0]["compute_steps"] == [0, 1, 2, 4, 6, 9]
    assert "flux ref-28.json" in [o for o in SN.LoadSchedule.define_schema().inputs[0].options]
    loaded = SN.LoadSchedule.execute("flux ref-28.json")
    s, calib = loaded.args
    assert s == schedule() and dict(s.provenance) == dict(schedule().provenance)
    assert isinstance(calib, CalibrationData) and calib.max_gap == 3
    assert np.array_equal(calib.weights, calibration().weights)
    assert torch.allclose(calib.runs[0].latents, calibration().runs[0].latents, atol=1e-3)  # float16 on disk
    graph = calib.graph_schedule(5)  # leximax on w = gap/10: one gap of 3 and three of 2 beat (3, 3, 2, 1)
    assert graph.budget == 5 and sorted(graph.gaps) == [2, 2, 2, 3]
    assert calib.graph_schedule(3) is None  # K=3 cannot cover 9 steps with gaps <= 3


def test_no_overwrite_adds_a_counter_and_overwrite_replaces(otcache_dir):
    first = SN.save_schedule(schedule(), "same")
    second = SN.save_schedule(schedule().replace(compute_steps=(0, 3, 6, 9)), "same.json")
    assert first.name == "same.json" and second.name == "same-001.json"
    third = SN.save_schedule(schedule().replace(compute_steps=(0, 4, 9)), "same", overwrite=True)
    assert third == first and SN.load_schedule("same.json")[0].compute_steps == (0, 4, 9)
    assert SN.load_schedule("same.json")[1] is None


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "/etc/passwd", ".hidden", "..", "", "   ",
                                  "x" * 101, "semi;colon", "~home"])
def test_hostile_save_names_are_refused_with_a_message(otcache_dir, name):
    with pytest.raises(ValueError, match="OTCache Save Schedule: .*(file name|empty)"):
        SN.SaveSchedule.execute(schedule(), name)
    assert not any(otcache_dir.parent.parent.rglob("*.json"))


@pytest.mark.parametrize("name", ["../x.json", "../../etc/passwd", "/etc/hostname", "sub/../../x.json",
                                  ".hidden.json", "missing.json", "a.txt"])
def test_hostile_or_unknown_load_names_are_refused(otcache_dir, name, tmp_path):
    (tmp_path / "x.json").write_text(SN.schedule_io.dumps(schedule()))  # a valid file just outside the folder
    with pytest.raises(ValueError, match="OTCache Load Schedule: .*schedule"):
        SN.LoadSchedule.execute(name)


def test_a_symlink_out_of_the_folder_is_refused(otcache_dir, tmp_path):
    otcache_dir.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside.json"
    outside.write_text(SN.schedule_io.dumps(schedule()))
    os.symlink(outside, otcache_dir / "link.json")
    with pytest.raises(ValueError, match="outside the otcache folders"):
        SN.LoadSchedule.execute("link.json")


def test_oversized_wrong_json_and_invalid_schedules_are_refused(otcache_dir):
    otcache_dir.mkdir(parents=True, exist_ok=True)
    (otcache_dir / "big.json").write_text(" " * (2 << 20))
    (otcache_dir / "broken.json").write_text("{\"num_steps\": 5,")
    (otcache_dir / "wrong.json").write_text(json.dumps({"num_steps": 5, "compute_steps": [1, 2, 4]}))
    (otcache_dir / "list.json").write_text("[1, 2, 3]")
    cases = {"big.json": "larger than", "broken.json": "not valid JSON", "wrong.json": "start with step 0",
             "list.json": "top level must be a JSON object"}
    for name, message in cases.items():
        with pytest.raises(ValueError, match=f"OTCache Load Schedule: .*{name}.*{message}"):
            SN.LoadSchedule.execute(name)


def test_a_corrupt_calibration_file_is_a_clear_error(otcache_dir):
    SN.save_schedule(schedule(), "withcal")
    (otcache_dir / "withcal.calib.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="withcal.calib.safetensors: not a readable safetensors"):
        SN.LoadSchedule.execute("withcal.json")


def test_presets_are_listed_and_load(otcache_dir):
    options = SN.LoadSchedule.define_schema().inputs[0].options
    presets = [o for o in options if o.startswith("preset:")]
    if not presets:
        pytest.skip("this checkout ships no presets")
    out = SN.LoadSchedule.execute(presets[0])
    s, calib = out.args
    assert isinstance(s, Schedule) and calib is None


def test_clean_name_rules():
    assert SN.clean_name("my schedule") == "my schedule.json"
    assert SN.clean_name("a.json") == "a.json"
    with pytest.raises(ScheduleError, match="no folders"):
        SN.clean_name("a/b")


# --- the preview route resolves names as Load Schedule does (issue #12, items 1 and 2) ---------------------

def _preview(reference) -> tuple[int, dict]:
    """What POST /otcache/preview answers (its resolver and its error sentence)."""
    from otcache_pack.nodes import routes
    from otcache_pack.nodes.preview import PreviewError, preview
    try:
        return 200, preview({"reference": reference}, resolve_name=routes.resolve_schedule_name)
    except PreviewError as e:
        return 400, {"error": str(e)}


def test_preview_names_go_through_load_schedules_checks(otcache_dir, tmp_path):
    otcache_dir.mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "x.json").write_text(SN.schedule_io.dumps(schedule().with_provenance(note="SECRET-CONTENT")))
    os.symlink(secret / "x.json", otcache_dir / "link.json")          # a file link out of the folder
    os.symlink(secret, otcache_dir / "sub")                            # a folder link out of it
    (otcache_dir / ".hidden.json").write_text(SN.schedule_io.dumps(schedule()))
    SN.save_schedule(schedule(), "withcal", calibration=calibration())
    (otcache_dir / "broken.json").write_text("{\"num_steps\": 5,")
    cases = {"link.json": "outside", "sub/x.json": "outside", ".hidden.json": "hidden",
             "withcal.calib.safetensors": "only .json", "broken.json": "not valid JSON",
             "missing.json": "no schedule named"}
    for name, fragment in cases.items():
        status, body = _preview(name)
        assert status == 400 and fragment in body["error"], (name, body)
        assert "SECRET" not in body["error"] and str(tmp_path) not in body["error"], body   # no server path
    status, body = _preview("withcal.json")
    assert status == 200 and body["rows"][0]["compute_steps"] == list(schedule().compute_steps)


def test_saving_through_a_planted_tmp_link_writes_nothing_outside(otcache_dir, tmp_path):
    otcache_dir.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside.json"
    os.symlink(outside, otcache_dir / "mine.json.tmp")
    path = SN.save_schedule(schedule(), "mine")
    assert not outside.exists() and not path.is_symlink()
    assert SN.load_schedule("mine.json")[0] == schedule()
