"""CalibrationRun: validation, derived signals, safetensors round trip, malformed files."""
from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from calib_fixtures import flux_sigmas, make_run
from otcache_engine.calibration.calibration_run import (CalibrationRun, as_runs, calibration_id, check_compatible,
                                        derived_signals, magcache_ratios_from_norms)
from otcache_engine.calibration.calibration_io import load_runs, load_runs_with_metadata, save_runs
from otcache_engine.errors import CalibrationError


def _arrays(n=6, shape=(2, 3)):
    sig = flux_sigmas(n)
    lat = torch.randn((n + 1,) + shape)
    out = torch.randn((n,) + shape)
    return sig, lat, out


def test_construction_normalises_types():
    sig, lat, out = _arrays()
    run = CalibrationRun(sig, lat.double().numpy(), out.numpy(), signals={"step_time": [0.1] * 6},
                         residual_norms={"img": np.ones((6, 4))}, meta={"steps": 6, "seed": 3})
    assert run.num_steps == 6 and run.sample_shape == (2, 3)
    assert run.latents.dtype == torch.float32 and run.outputs.dtype == torch.float32
    assert run.sigmas.dtype == torch.float64 and run.sigmas[0].item() == sig[0]
    assert run.x.shape == (7, 6) and run.v.shape == (6, 6)
    assert run.signals["step_time"].dtype == np.float64
    assert not run.signals["step_time"].flags.writeable
    assert run.residual_norms["img"].shape == (6, 4)


@pytest.mark.parametrize("change, message", [
    (dict(latents=torch.zeros(6, 2, 3)), "N+1 = 7"),
    (dict(outputs=torch.zeros(5, 2, 3)), "N = 6"),
    (dict(outputs=torch.zeros(6, 3, 2)), "same per-step shape"),
    (dict(sigmas=[1.0, 0.5]), "N+1 = 2"),
    (dict(sigmas=np.r_[flux_sigmas(6)[:-1], 0.5]), "non-increasing"),
    (dict(sigmas=np.r_[flux_sigmas(6)[:-1], -0.1]), "non-negative"),
    (dict(sigmas=np.ones(7)), "decrease"),
    (dict(sigmas=np.r_[np.nan, flux_sigmas(6)[1:]]), "NaN"),
    (dict(sigmas=[[1.0, 0.0]]), "1-D"),
    (dict(latents="abc"), "not an array"),
    (dict(latents=torch.zeros(7, 2, 3, dtype=torch.bool)), "real numbers"),
    (dict(signals={"teacache_rel_l1": [0.0] * 5}), "shape (N,)"),
    (dict(signals={"teacache_rel_l1": [np.nan] * 6}), "NaN"),
    (dict(signals={"bad name!": [0.0] * 6}), "name"),
    (dict(signals=[1, 2]), "dict"),
    (dict(residual_norms={"img": -np.ones((6, 2))}), "non-negative"),
    (dict(residual_norms={"img": np.ones((5, 2))}), "N = 6"),
    (dict(meta={"steps": 7}), "does not match"),
    (dict(meta={"x": object()}), "JSON"),
    (dict(meta={"x": float("nan")}), "JSON"),
    (dict(meta=[1]), "dict"),
])
def test_validation_errors(change, message):
    sig, lat, out = _arrays()
    kwargs = dict(sigmas=sig, latents=lat, outputs=out)
    kwargs.update(change)
    with pytest.raises(CalibrationError, match=re.escape(message)):
        CalibrationRun(**kwargs)


def test_nan_latents_rejected():
    sig, lat, out = _arrays()
    lat[3, 0, 0] = float("nan")
    with pytest.raises(CalibrationError, match="latents contains 1 NaN"):
        CalibrationRun(sig, lat, out)
    lat[3, 0, 0] = 0.0
    out[2, 1, 1] = float("inf")
    with pytest.raises(CalibrationError, match="outputs"):
        CalibrationRun(sig, lat, out)


def test_derived_signals_match_definitions():
    run = make_run(8)
    d = derived_signals(run)
    v, x, s = run.v.double(), run.x.double(), run.sigmas
    for n in range(1, 8):
        dv = (v[n] - v[n - 1]).abs().mean()
        assert d["output_rel_l1"][n] == pytest.approx(float(dv / v[n - 1].abs().mean()), rel=1e-9)
        assert d["easycache_k"][n] == pytest.approx(float(dv / (x[n] - x[n - 1]).abs().mean()), rel=1e-9)
        cos = float(torch.nn.functional.cosine_similarity(v[n], v[n - 1], dim=0))
        assert d["curvature_cos"][n] == pytest.approx(1 - cos, abs=1e-12)
        assert d["curvature_mag"][n] == pytest.approx(float((v[n] - v[n - 1]).norm() / v[n - 1].norm()), rel=1e-9)
        step = abs(float(s[n + 1] - s[n])) * float(dv) / float(x[n].abs().mean())
        assert d["curvature_step"][n] == pytest.approx(step, rel=1e-9)
    for a in d.values():
        assert a[0] == 0.0 and a.shape == (8,)


def test_derived_signals_never_nan_on_zero_data():
    sig = flux_sigmas(5)
    run = CalibrationRun(sig, torch.zeros(6, 4), torch.zeros(5, 4))
    for name, a in derived_signals(run).items():
        assert np.isfinite(a).all(), name


def test_signal_lookup_and_with_signals():
    run = make_run(6)
    assert run.signal("output_rel_l1").shape == (6,)
    with pytest.raises(CalibrationError, match="no signal 'teacache_rel_l1'"):
        run.signal("teacache_rel_l1")
    run2 = run.with_signals(teacache_rel_l1=np.arange(6.0))
    assert run2.signal("teacache_rel_l1")[3] == 3.0
    run3 = run2.with_derived_signals()
    assert set(run3.signals) >= {"teacache_rel_l1", "easycache_k", "curvature_cos"}
    run4 = run.with_signals(output_rel_l1=np.ones(6)).with_derived_signals()
    assert run4.signals["output_rel_l1"][0] == 1.0            # recorded wins
    assert run.with_signals(output_rel_l1=np.ones(6)).with_derived_signals(overwrite=True) \
        .signals["output_rel_l1"][0] == 0.0


def test_magcache_ratios_from_norms():
    norms = np.array([[1.0, 2.0], [2.0, 2.0], [1.0, 1.0]])
    r = magcache_ratios_from_norms(norms)
    assert r.tolist() == pytest.approx([1.0, 1.5, 0.5])
    run = make_run(3).with_signals()
    run = CalibrationRun(run.sigmas, run.latents, run.outputs, residual_norms={"img": norms})
    assert run.signal("magcache_ratio").tolist() == pytest.approx([1.0, 1.5, 0.5])


def test_compatibility_checks():
    a, b = make_run(6, seed=0), make_run(6, seed=1)
    assert len(as_runs([a, b])) == 2
    with pytest.raises(CalibrationError, match="same step count"):
        check_compatible([a, make_run(7)])
    other = CalibrationRun(flux_sigmas(6, mu=0.5), b.latents, b.outputs)
    with pytest.raises(CalibrationError, match="sigma grid"):
        as_runs([a, other])
    with pytest.raises(CalibrationError, match="no calibration runs"):
        as_runs([])
    with pytest.raises(CalibrationError, match="CalibrationRun"):
        as_runs([a, 3])
    assert calibration_id([a, b]) == calibration_id([a, b]) != calibration_id([b, a])


def test_round_trip(tmp_path):
    a = make_run(6, seed=0).with_derived_signals()
    b = CalibrationRun(a.sigmas, a.latents * 2, a.outputs, residual_norms={"img": np.ones((6, 5)),
                                                                          "txt": np.full((6,), 2.0)},
                       signals={"step_time": np.linspace(0.1, 0.2, 6)},
                       meta={"model_family": "flux", "steps": 6, "resolution": [1024, 1024], "cfg": 3.5})
    path = save_runs([a, b], tmp_path / "calib.safetensors", extra_metadata={"note": "x"})
    runs, extra = load_runs_with_metadata(path)
    assert extra == {"note": "x"}
    assert len(runs) == 2
    for orig, back in zip([a, b], runs):
        assert torch.equal(orig.latents, back.latents) and torch.equal(orig.outputs, back.outputs)
        assert torch.equal(orig.sigmas, back.sigmas)
        assert set(orig.signals) == set(back.signals)
        for k in orig.signals:
            assert np.array_equal(orig.signals[k], back.signals[k])
        for k in orig.residual_norms:
            assert torch.equal(orig.residual_norms[k], back.residual_norms[k])
        assert orig.meta == back.meta
    assert not (tmp_path / "calib.safetensors.tmp").exists()


def test_round_trip_half_precision(tmp_path):
    a = make_run(5)
    path = save_runs(a, tmp_path / "c.safetensors", dtype="float16")
    (b,) = load_runs(path)
    assert b.latents.dtype == torch.float32
    assert torch.allclose(a.latents, b.latents, rtol=1e-3, atol=1e-3)
    assert torch.equal(a.sigmas, b.sigmas)
    with pytest.raises(CalibrationError, match="dtype"):
        save_runs(a, tmp_path / "d.safetensors", dtype="int8")
    with pytest.raises(CalibrationError, match="non-empty"):
        save_runs([], tmp_path / "e.safetensors")


def _write(path, tensors, header):
    save_file(tensors, str(path), metadata=header)
    return path


def _good(tmp_path):
    a = make_run(4)
    return save_runs(a, tmp_path / "good.safetensors"), a


def test_malformed_garbage(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(CalibrationError, match="not a readable safetensors"):
        load_runs(p)
    p.write_bytes(struct.pack("<Q", 10 ** 9) + b"{}")
    with pytest.raises(CalibrationError, match="junk.safetensors"):
        load_runs(p)
    p.write_bytes(b"")
    with pytest.raises(CalibrationError):
        load_runs(p)


def test_malformed_missing_file(tmp_path):
    with pytest.raises(CalibrationError, match="no such calibration file"):
        load_runs(tmp_path / "nope.safetensors")


def test_malformed_foreign_safetensors(tmp_path):
    p = _write(tmp_path / "f.safetensors", {"w": torch.zeros(2)}, {"hello": "world"})
    with pytest.raises(CalibrationError, match="not an OTCache calibration file"):
        load_runs(p)


def test_malformed_header_entries(tmp_path):
    _, a = _good(tmp_path)
    t = {"runs.0.sigmas": a.sigmas, "runs.0.latents": a.latents, "runs.0.outputs": a.outputs}
    base = {"format": "otcache.calibration", "version": "1"}
    rec = json.dumps([{"meta": {}, "signals": [], "residual_streams": []}])
    cases = [
        ({**base, "version": "9", "runs": rec}, t, "version"),
        ({**base, "runs": "{not json"}, t, "not valid JSON"),
        ({**base, "runs": "[]"}, t, "non-empty JSON list"),
        ({**base, "runs": json.dumps([{"meta": {}, "bogus": 1}])}, t, "header record"),
        ({**base, "runs": json.dumps([{"meta": {}, "signals": ["teacache_rel_l1"]}])}, t, "missing"),
        ({**base, "runs": rec}, {**t, "stray": torch.zeros(1)}, "unexpected tensor"),
        ({**base, "runs": rec}, {**t, "runs.0.outputs": torch.zeros(3, 3, 8)}, "run 0: outputs"),
        ({**base, "runs": rec}, {**t, "runs.0.latents": torch.zeros(5, 3, 8, dtype=torch.int32)},
         "floating point"),
        ({**base, "runs": json.dumps([{"meta": {"steps": 9}}])}, t, "does not match"),
        ({**base, "runs": rec, "extra": "[1]"}, t, "extra"),
    ]
    for k, (header, tensors, message) in enumerate(cases):
        p = _write(tmp_path / f"m{k}.safetensors", tensors, header)
        with pytest.raises(CalibrationError, match=message) as info:
            load_runs(p)
        assert f"m{k}.safetensors" in str(info.value)
        assert "\n" not in str(info.value)


def test_nan_in_file_rejected(tmp_path):
    _, a = _good(tmp_path)
    lat = a.latents.clone()
    lat[1, 0, 0] = float("nan")
    header = {"format": "otcache.calibration", "version": "1",
              "runs": json.dumps([{"meta": {}, "signals": [], "residual_streams": []}])}
    p = _write(tmp_path / "nan.safetensors", {"runs.0.sigmas": a.sigmas, "runs.0.latents": lat,
                                              "runs.0.outputs": a.outputs}, header)
    with pytest.raises(CalibrationError, match="NaN"):
        load_runs(p)
