"""Smoke tests of ``demo`` and ``bench`` on a tiny randomly initialised toy model (seconds)."""
from __future__ import annotations

import json
import re

import pytest
import torch

from otcache_engine.schedules import schedule_io
from benchmarks.toy.commands import main
from benchmarks.toy.report import NOISE_MARK, NOISE_NOTE
from benchmarks.toy.model import ToyDiT, ToyDiTConfig
from benchmarks.toy.train import save


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = ToyDiT(ToyDiTConfig(dim=32, depth=2, heads=2))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.08)
    out = tmp_path_factory.mktemp("tiny")
    return save(model, {"steps_done": 0, "steps_planned": 0}, out)


def test_demo_prints_one_row_per_budget_and_writes_its_files(tiny_weights, tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--weights", str(tiny_weights), "--steps", "10", "--pairs", "1", "--eval-pairs", "2",
                 "--trials", "3", "--budgets", "3", "--repeats", "2", "--threads", "1", "--out", str(out),
                 "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines() if line.startswith("OTCache K=")]
    assert [r[1] for r in rows] == ["K=5", "K=4", "K=3"]               # N/2 .. N/5 for N = 10
    for r in rows:
        k = int(r[1][2:])
        assert float(r[2]) == k and float(r[3]) == pytest.approx(10 / k, abs=0.01)   # K column and NFE x
        wall = r[4]                       # never above N/K unmarked; a marked one comes with the note
        assert float(wall) <= float(r[3]) if not wall.endswith(NOISE_MARK) else NOISE_NOTE in text
        assert r[-1] == "n/a" or 0 <= float(r[-1]) <= 1                            # LPIPS or n/a
    for free in ("free default", "uniform skip"):       # what costs nothing to set up, at every budget
        beside = [line.split() for line in text.splitlines() if line.startswith(free + " K=")]
        assert [r[2] for r in beside] == ["K=5", "K=4", "K=3"] and all(float(r[3]) == int(r[2][2:]) for r in beside)
    cost = re.search(r"calibration \+ anchor search cost (\d+) block-stack runs = ([\d.]+) uncached generations", text)
    assert cost and int(cost.group(1)) > 0 and float(cost.group(2)) > 1
    assert "fetches it once into ComfyUI/models/otcache/lpips" in text or "LPIPS n/a" not in text
    assert (out / "demo.png").stat().st_size > 1000
    reference, anchor = schedule_io.load(out / "reference.json"), schedule_io.load(out / "anchor.json")
    assert (reference.budget, anchor.budget) == (5, 3)
    assert schedule_io.load(out / "otcache_K4.json").budget == 4


def test_bench_writes_every_row_for_every_budget(tiny_weights, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--weights", str(tiny_weights), "--steps", "20", "--pairs", "1", "--eval-seeds", "1",
                 "--trials", "2", "--repeats", "1", "--threads", "1", "--out", str(out), "--quiet"])
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    by_k: dict[int, set[str]] = {}
    for row in data["rows"]:
        by_k.setdefault(row["extra"]["target_K"], set()).add(row["method"])
    common = {"uniform", "MagCache", "TeaCache", "EasyCache", "FBCache", "graph (leximax)", "OTCache",
              "OmniCache (no gamma)", "OmniCache+gamma"}
    assert sorted(by_k) == [4, 5, 7, 10]                               # N/5 .. N/2 for N = 20
    for k, methods in by_k.items():
        assert methods >= common
        assert ("direct optimisation" in methods) == (k in (5, 7))      # only at the intermediate budgets
    assert {r["method"] for r in data["ablation"]} == {"OT linear_k", "OT inverse_k", "OT log_k",
                                                        "OT predicted_error"}
    assert (out / "bench_pareto.png").stat().st_size > 1000
    md = (out / "bench.md").read_text()
    assert "| OTCache |" in md and "## Summary" in md
    assert "OTCache" in capsys.readouterr().out
