"""The Schedule value and its JSON file format: every bad input gives one clear message."""
from __future__ import annotations

import json
import math

import jsonschema
import pytest
from hypothesis import given, settings, strategies as st

from otcache_engine.schedules import schedule_io
from otcache_engine.errors import ScheduleError
from otcache_engine.schedules.schedule import Schedule

SCHEMA = json.loads(schedule_io.SCHEMA_PATH.read_text())


def good_dict(**changes):
    d = {"format": "otcache.schedule", "version": 1, "num_steps": 10, "compute_steps": [0, 3, 6, 9],
         "kind": "reference", "force_last": True, "coord": "index", "sigmas": None, "max_gap": 3,
         "provenance": {"source": "test"}}
    d.update(changes)
    return d


def load_error(tmp_path, text: str) -> str:
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(ScheduleError) as e:
        schedule_io.load(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    return message


# --- the value ----------------------------------------------------------------------

def test_views():
    s = Schedule(10, (0, 3, 6, 9))
    assert s.budget == 4 and s.speedup == 2.5
    assert s.mask_string() == "#..#..#..#"
    assert s.gaps == (3, 3, 3) and s.largest_gap == 3
    assert [s.last_compute(n) for n in range(10)] == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]
    assert Schedule.from_mask(s.mask) == s


def test_force_last_false_counts_the_tail_gap():
    s = Schedule(10, (0, 2, 4), force_last=False)
    assert s.largest_gap == 6


@pytest.mark.parametrize("steps, fragment", [
    ((), "empty"),
    ((1, 3, 9), "start with step 0"),
    ((0, 5, 3, 9), "strictly increasing"),
    ((0, 3, 3, 9), "strictly increasing"),
    ((0, 3, 10), "out of range"),
    ((0, 3, 8), "last step"),
])
def test_bad_compute_steps(steps, fragment):
    with pytest.raises(ScheduleError, match=fragment):
        Schedule(10, steps)


def test_bad_fields():
    with pytest.raises(ScheduleError, match="kind"):
        Schedule(10, (0, 9), kind="magic")
    with pytest.raises(ScheduleError, match="coordinate"):
        Schedule(10, (0, 9), coord="time")
    with pytest.raises(ScheduleError, match="sigmas must have"):
        Schedule(3, (0, 2), sigmas=(1.0, 0.5, 0.0))
    with pytest.raises(ScheduleError, match="non-increasing"):
        Schedule(2, (0, 1), sigmas=(1.0, 0.2, 0.5))


def test_immutable_and_provenance_is_carried():
    s = Schedule(10, (0, 9), provenance={"source": "x", "nested": {"a": [1, 2]}})
    with pytest.raises(Exception):
        s.num_steps = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.provenance["source"] = "y"  # type: ignore[index]
    t = s.with_provenance(budget=2)
    assert t.provenance["source"] == "x" and t.provenance["budget"] == 2 and "budget" not in s.provenance


# --- files --------------------------------------------------------------------------

def test_round_trip(tmp_path):
    s = Schedule(4, (0, 2, 3), kind="anchor", sigmas=(1.0, 0.7, 0.3, 0.1, 0.0), max_gap=2,
                 provenance={"source": "unit test", "trials": 3, "nested": {"x": [1.5, 2]}})
    path = schedule_io.save(s, tmp_path / "a.json")
    back = schedule_io.load(path)
    assert back == s and back.to_dict() == s.to_dict()
    assert schedule_io.loads(schedule_io.dumps(s)) == s
    assert not (tmp_path / "a.json.tmp").exists()


def test_saved_files_validate_against_the_published_schema(tmp_path):
    for s in (Schedule(10, (0, 3, 6, 9)), Schedule(5, (0, 2), force_last=False, kind="omnicache"),
              Schedule(2, (0, 1), sigmas=(1.0, 0.5, 0.0), provenance={"model_family": "flux"})):
        data = json.loads(schedule_io.save(s, tmp_path / "s.json").read_text())
        jsonschema.validate(data, SCHEMA)


def test_schema_rejects_what_the_loader_rejects():
    for bad in (good_dict(version=2), good_dict(kind="magic"), good_dict(extra=1),
                good_dict(compute_steps=[0, 3, 3, 9]), good_dict(num_steps=0)):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)
        with pytest.raises(ScheduleError):
            schedule_io.from_dict(bad)


def test_missing_file(tmp_path):
    with pytest.raises(ScheduleError, match="no such schedule file"):
        schedule_io.load(tmp_path / "absent.json")


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    ("[0, 1]", "top level must be a JSON object"),
    (json.dumps(good_dict(version=2)), "unsupported schedule version 2"),
    (json.dumps(good_dict(version=True)), "unsupported schedule version"),
    (json.dumps(good_dict(format="other")), "'format' must be"),
    (json.dumps(good_dict(compute_steps=[0, 6, 3, 9])), "strictly increasing"),
    (json.dumps(good_dict(compute_steps=[0, 3, 3, 9])), "duplicates"),
    (json.dumps(good_dict(compute_steps=[0, 3, 12])), "out of range"),
    (json.dumps(good_dict(compute_steps=[-1, 0, 9])), "start with step 0"),
    (json.dumps(good_dict(compute_steps=[3, 6, 9])), "start with step 0"),
    (json.dumps(good_dict(compute_steps=[0, 2.5, 9])), "must be an integer"),
    (json.dumps(good_dict(compute_steps="0,9")), "must be a list"),
    (json.dumps(good_dict(kind="magic")), "unknown schedule kind 'magic'"),
    (json.dumps(good_dict(coord="time")), "'coord' must be one of"),
    (json.dumps(good_dict(force_last="yes")), "'force_last' must be true or false"),
    (json.dumps(good_dict(num_steps="10")), "num_steps must be an integer"),
    (json.dumps(good_dict(max_gap=0)), "max_gap must be an integer from 1"),
    (json.dumps(good_dict(sigmas=[1, 0.5])), "sigmas must have"),
    (json.dumps(good_dict(provenance=[1])), "'provenance' must be a JSON object"),
    (json.dumps(good_dict(surprise=1)), "unknown field"),
    (json.dumps({"num_steps": 10}), "missing required field"),
    ('{"num_steps": 10, "compute_steps": [0, NaN, 9]}', "NaN or infinity"),
    ('{"num_steps": 10, "compute_steps": [0, 9], "sigmas": [Infinity]}', "NaN or infinity"),
])
def test_bad_files_give_one_clear_line(tmp_path, text, fragment):
    assert fragment in load_error(tmp_path, text)


def test_nan_sigma_in_a_list(tmp_path):
    sig = "[1.0, NaN, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.0]"
    message = load_error(tmp_path, '{"num_steps": 10, "compute_steps": [0, 9], "sigmas": %s}' % sig)
    assert "NaN" in message


def test_oversized_file(tmp_path):
    padding = " " * (schedule_io.MAX_FILE_BYTES + 1)
    assert "larger than" in load_error(tmp_path, json.dumps(good_dict()) + padding)
    with pytest.raises(ScheduleError, match="larger than"):
        schedule_io.loads(json.dumps(good_dict()) + padding)


def test_binary_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScheduleError, match="UTF-8"):
        schedule_io.load(path)


def test_integral_floats_are_accepted():
    s = schedule_io.from_dict(good_dict(num_steps=10.0, compute_steps=[0, 3.0, 6, 9]))
    assert s.compute_steps == (0, 3, 6, 9) and all(isinstance(x, int) for x in s.compute_steps)


@st.composite
def schedules(draw):
    n = draw(st.integers(1, 60))
    force_last = draw(st.booleans()) if n > 1 else True
    inner = draw(st.sets(st.integers(1, max(1, n - 2)), max_size=n)) if n > 2 else set()
    steps = {0} | inner | ({n - 1} if force_last else set())
    sigmas = None
    if draw(st.booleans()):
        sigmas = tuple(sorted((draw(st.floats(0, 20, allow_nan=False)) for _ in range(n)), reverse=True)) + (0.0,)
        if sigmas[0] <= 0.0:
            sigmas = None
    return Schedule(n, tuple(sorted(steps)), force_last=force_last, sigmas=sigmas,
                    kind=draw(st.sampled_from(["custom", "reference", "anchor", "interpolated"])))


@settings(max_examples=60, deadline=None)
@given(schedules())
def test_round_trip_property(s):
    text = schedule_io.dumps(s)
    back = schedule_io.loads(text)
    assert back == s
    jsonschema.validate(json.loads(text), SCHEMA)
    assert back.budget == sum(back.mask) and math.isclose(back.speedup, s.num_steps / s.budget)


@pytest.mark.parametrize("depth", [500, 100_000])
def test_deeply_nested_json_is_a_clear_error(tmp_path, depth):
    text = '{"num_steps": 2, "compute_steps": [0, 1], "provenance": {"a": %s}}' % ("[" * depth + "]" * depth)
    assert "nested too deeply" in load_error(tmp_path, text)


# --- hostile files (issue #12, items 2 and 4) ------------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    ('{"num_steps": %s, "compute_steps": [0]}' % ("9" * 5000), "5000 digits"),
    ('{"num_steps": %d, "compute_steps": [0]}' % 10 ** 19, "from 1 to 10000"),
    ('{"num_steps":100000000,"compute_steps":[0,99999999]}', "ComfyUI's step limit"),
    ('{"num_steps": 1e300, "compute_steps": [0]}', "must be an integer"),
    ('{"num_steps": 10, "compute_steps": [0, 9], "sigmas": [1e400]}', "out of range"),
    ('{"num_steps": 10, "compute_steps": [0, 9], "max_gap": 99999999}', "max_gap must be"),
    ('{"num_steps": 10, "compute_steps": [0, 9], "provenance": {"lambda": %s}}' % ("7" * 4000), "4000 digits"),
    ('{"num_steps": 10, "compute_steps": [0, 9], "provenance": {"lambda": 1e999}}', "out of range"),
    ('{"num_steps": 10, "compute_steps": %s}' % list(range(20)), "more than num_steps"),
])
def test_huge_numbers_are_one_clear_line(tmp_path, text, fragment):
    assert fragment in load_error(tmp_path, text)


def test_huge_numbers_from_python_are_refused_too():
    for bad in (good_dict(num_steps=10 ** 4000), good_dict(sigmas=[10 ** 400] * 11),
                good_dict(provenance={"lambda": 10 ** 4000}), good_dict(provenance={"a": [[[[{"b": math.inf}]]]]})):
        with pytest.raises(ScheduleError) as e:
            schedule_io.from_dict(bad)
        assert len(str(e.value)) < 200
    with pytest.raises(ScheduleError, match="from 1 to 10000"):
        Schedule(10 ** 9, (0, 10 ** 9 - 1))


def test_a_fifo_or_a_symlink_is_not_read(tmp_path):
    import os
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ScheduleError, match="not a regular file"):
        schedule_io.load(fifo)   # would block forever if opened for a plain read
    (tmp_path / "real.json").write_text(json.dumps(good_dict()))
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(ScheduleError, match="symbolic link"):
        schedule_io.load(tmp_path / "link.json")


def test_saving_never_writes_through_a_planted_tmp_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "otcache"
    folder.mkdir()
    (folder / "mine.json.tmp").symlink_to(outside / "stolen.json")
    path = schedule_io.save(Schedule(10, (0, 3, 6, 9)), folder / "mine.json")
    assert not (outside / "stolen.json").exists()
    assert path.is_file() and not path.is_symlink() and schedule_io.load(path).budget == 4
    assert (folder / "mine.json.tmp").is_symlink()        # left alone, not renamed into place
    assert sorted(p.name for p in folder.iterdir()) == ["mine.json", "mine.json.tmp"]   # no temp file left


def test_calibration_files_never_write_through_planted_links(tmp_path):
    """A guard: safetensors writes its own temporary file and renames it, so links at <name>.tmp and at the
    target are replaced, never followed."""
    import torch
    from otcache_engine.calibration.calibration_run import CalibrationRun
    from otcache_engine.calibration.calibration_io import load_runs, save_runs
    folder = tmp_path / "otcache"
    folder.mkdir()
    (folder / "c.calib.safetensors.tmp").symlink_to(tmp_path / "stolen")
    (folder / "c.calib.safetensors").symlink_to(tmp_path / "stolen2")
    run = CalibrationRun(sigmas=torch.linspace(1, 0, 4), latents=torch.zeros(4, 1, 2, 2),
                         outputs=torch.zeros(3, 1, 2, 2), meta={"seed": 0})
    path = save_runs(run, folder / "c.calib.safetensors")
    assert not (tmp_path / "stolen").exists() and not (tmp_path / "stolen2").exists()
    assert not path.is_symlink() and len(load_runs(path)) == 1
