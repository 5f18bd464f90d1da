"""The real-size mode of ``benchmarks/bench_runtime.py`` (FLUX.1-dev and Wan 2.1 14B on a GPU), run by the
same code at tiny size on the CPU, for both models, with N = 6: the table has a row per operator and speed-up,
every speed-up is a positive finite number, the counted NFE ratio is N/K, CFG ran batched, and the VRAM
columns say "n/a (cpu)". No timing is asserted (speed is never asserted in tests). Also: without a CUDA
device the CUDA mode stops with one sentence and exit code 2, and the real sizes are the published models
(parameter counts from a meta-device build)."""
from __future__ import annotations

import math

import pytest

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

from benchmarks import bench_runtime  # noqa: E402
from benchmarks.real_size import cli, device, measure, table  # noqa: E402

STEPS = 6
MODELS = ("flux_dev", "wan21_14b")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("real_size") / "table.txt"
    args = bench_runtime.parse_args(["--device", "cpu", "--size", "tiny", "--steps", str(STEPS), "--repeats", "1",
                                     "--models", *MODELS, "--out", str(out)])
    assert args.mode == "real_size"
    code, results = cli.run(args)
    return code, {r.spec.name: r for r in results}, out.read_text(encoding="utf-8")


def test_both_models_run_and_the_run_succeeds(run):
    code, results, _ = run
    assert code == 0
    assert sorted(results) == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_a_row_per_operator_and_speedup_under_the_uncached_row(run, name):
    result = run[1][name]
    assert (result.rows[0].operator, result.rows[0].target) == (measure.UNCACHED, 1)
    keys = [(row.operator, row.target) for row in result.rows[1:]]
    assert keys == [(op.label, s) for op in measure.OPERATORS for s in measure.SPEEDUPS]
    assert len(measure.OPERATORS) == 7 and measure.SPEEDUPS == (2, 3, 4, 5)
    assert bench_runtime.OPERATOR_KEYS == tuple(measure.BY_KEY)    # the CLI's choices are the operators


@pytest.mark.parametrize("name", MODELS)
def test_speedups_are_positive_finite_and_the_nfe_ratio_is_n_over_k(run, name):
    result = run[1][name]
    assert result.steps == STEPS
    for row in result.rows:
        assert row.speedup > 0 and math.isfinite(row.speedup), row
        assert row.k == (STEPS if row.target == 1 else measure.budget(STEPS, row.target))
        assert row.nfe_ratio == pytest.approx(STEPS / row.k), row
        assert row.cells()["NFE ratio"] == f"{STEPS / row.k:.2f}"


@pytest.mark.parametrize("name", MODELS)
def test_cfg_ran_batched_and_vram_is_not_applicable_on_the_cpu(run, name):
    result = run[1][name]
    assert result.cfg > 1 and result.batch == 2
    for row in result.rows:
        assert row.peak is None
        assert row.cells()["peak VRAM"] == row.cells()["cache"] == table.NA_CPU
    assert "cond and uncond batched" in table.render(result)


def test_the_results_file_holds_both_tables_and_the_legend(run):
    text = run[2]
    assert "on CPU" in text and f"ComfyUI {COMFY_VERSION}" in text
    for name in MODELS:
        assert run[1][name].spec.describe("tiny") in text
    for op in measure.OPERATORS:
        assert op.label in text
    assert table.NA_CPU in text and table.LEGEND.splitlines()[0] in text


def test_without_a_cuda_device_the_cuda_mode_stops_with_one_sentence(monkeypatch, capsys):
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    assert bench_runtime.main(["--device", "cuda", "--size", "real"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("no CUDA device: ") and "Traceback" not in "".join(lines)


def test_the_real_sizes_are_the_published_models():
    from benchmarks.real_size import models
    from benchmarks.real_size.specs import SPECS

    flux, flux_bytes = models.weight_bytes(SPECS["flux_dev"], "real")
    wan, wan_bytes = models.weight_bytes(SPECS["wan21_14b"], "real")
    assert 11.8e9 < flux < 12.0e9 and flux_bytes == 2 * flux     # FLUX.1-dev: 11.9 B, every weight bf16
    # Wan 2.1 14B; ComfyUI makes its patch embedding (0.3 M parameters) in fp32 whatever the dtype
    assert 14.2e9 < wan < 14.4e9 and 2 * wan < wan_bytes < 2 * wan + 2**20
