"""``python -m otcache_engine``: exit codes, one-line errors, and valid output for every budget."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from otcache_engine import cli, schedule_io
from otcache_engine.schedules.schedule import Schedule

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
REF = str(DATA / "lemica_flux1_dev_b26.json")
ANC = str(DATA / "lemica_flux1_dev_b10.json")
SCHEMA = json.loads(schedule_io.SCHEMA_PATH.read_text())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otcache_engine", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """In-process run of the same entry point (fast; the subprocess tests cover the real command)."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert "Traceback" not in err


# --- the real command (subprocess) ----------------------------------------------------------------

def test_interpolate_prints_a_valid_schedule():
    proc = run_cli("interpolate", REF, ANC, "--budget", "15")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    jsonschema.validate(data, SCHEMA)
    s = schedule_io.from_dict(data)
    assert s.budget == 15 and s.num_steps == 50 and s.kind == "interpolated"
    assert proc.stderr == ""


def test_malformed_file_is_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"num_steps": 50, "compute_steps": [0, 7, 7, 49]}')
    proc = run_cli("interpolate", REF, str(bad), "--budget", "15")
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_line_error(proc.stderr, "bad.json")


def test_infeasible_budget_is_exit_2_with_one_line():
    proc = run_cli("interpolate", REF, ANC, "--budget", "6", "--max-gap", "7")
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_line_error(proc.stderr, "smallest feasible budget is 8")


def test_show_and_plot(tmp_path):
    proc = run_cli("show", REF, ANC)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("###########.#..#..#.#....#....#....#...#..#.######  K=26/50 1.92x  reference")
    assert lines[1].startswith("##.#...#......#......#......#......#......#......#  K=10/50 5.00x  anchor")
    assert lines[1].endswith("lemica_flux1_dev_b10.json")
    out = tmp_path / "masks.png"
    proc = run_cli("plot", REF, ANC, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000


def test_every_budget_between_the_files_gives_a_valid_schedule():
    ref, anc = schedule_io.load(REF), schedule_io.load(ANC)
    budgets = list(range(anc.budget, ref.budget + 1))
    checked = []
    for batch in (budgets[i:i + 4] for i in range(0, len(budgets), 4)):  # a few at a time: 2 shared cores
        procs = {k: subprocess.Popen([sys.executable, "-m", "otcache_engine", "interpolate", REF, ANC,
                                      "--budget", str(k)], cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
                 for k in batch}
        for k, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0 and err == "", err
            data = json.loads(out)
            jsonschema.validate(data, SCHEMA)
            s = schedule_io.from_dict(data)
            assert s.budget == k and s.largest_gap <= 7
            checked.append(k)
    assert checked == list(range(10, 27))


# --- the same entry point in-process (fast) ---------------------------------------------------------


@pytest.mark.parametrize("rule", ["linear_k", "inverse_k", "log_k"])
def test_rules_and_output_file(capsys, tmp_path, rule):
    out = tmp_path / "t.json"
    code, stdout, err = run_main(capsys, "interpolate", REF, ANC, "--budget", "18", "--rule", rule, "-o", str(out))
    assert code == 0 and err == ""
    s = schedule_io.load(out)
    assert s.budget == 18 and s.provenance["rule"] == rule
    assert "K=18/50" in stdout and str(out) in stdout


def test_steps_retargets(capsys):
    code, out, _ = run_main(capsys, "interpolate", REF, ANC, "--budget", "10", "--steps", "30")
    assert code == 0
    s = schedule_io.loads(out)
    assert s.num_steps == 30 and s.budget == 10


def test_three_files_use_the_piecewise_geodesic(capsys, tmp_path):
    mid = tmp_path / "b15.json"
    schedule_io.save(Schedule(50, (0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 27, 34, 41, 47, 49), kind="anchor"), mid)
    code, out, _ = run_main(capsys, "interpolate", REF, str(mid), ANC, "--budget", "15")
    assert code == 0 and schedule_io.loads(out).compute_steps == (0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 27, 34, 41, 47, 49)


def test_extrapolation_warns_on_stderr_but_succeeds(capsys):
    code, out, err = run_main(capsys, "interpolate", REF, ANC, "--budget", "8")
    assert code == 0 and schedule_io.loads(out).budget == 8
    assert err.startswith("warning: ") and "outside [10, 26]" in err


@pytest.mark.parametrize("args, fragment", [
    (("interpolate", REF, ANC, "--budget", "51"), "out of range"),
    (("interpolate", REF, ANC, "--budget", "0"), "positive integer"),
    (("interpolate", REF, ANC, "--budget", "1"), "smallest feasible budget is 2"),
    (("interpolate", REF, ANC, "--budget", "ten"), "invalid int value"),
    (("interpolate", REF, ANC), "--budget"),
    (("interpolate", REF, "--budget", "12"), "reference and an anchor"),
    (("interpolate", REF, str(DATA / "absent.json"), "--budget", "12"), "no such schedule file"),
    (("interpolate", REF, ANC, "--budget", "12", "--rule", "cubic"), "invalid choice"),
    (("interpolate", REF, ANC, "--budget", "12", "--coord", "sigma"), "sigma grid"),
    (("show", str(DATA / "absent.json")), "no such schedule file"),
    (("plot", REF), "-o/--output"),
    (("frobnicate",), "invalid choice"),
    ((), "required"),
])
def test_bad_input_is_exit_2_with_one_line(capsys, args, fragment):
    code, out, err = run_main(capsys, *args)
    assert code == 2 and out == ""
    assert_one_line_error(err, fragment)


def test_different_step_counts_need_steps(capsys, tmp_path):
    other = tmp_path / "n30.json"
    schedule_io.save(Schedule(30, (0, 3, 9, 16, 23, 29)), other)
    code, _, err = run_main(capsys, "interpolate", REF, str(other), "--budget", "12")
    assert code == 2
    assert_one_line_error(err, "--steps")
    code, out, _ = run_main(capsys, "interpolate", REF, str(other), "--budget", "12", "--steps", "40")
    assert code == 0 and schedule_io.loads(out).num_steps == 40


def test_unwritable_output_is_exit_2(capsys, tmp_path):
    code, _, err = run_main(capsys, "interpolate", REF, ANC, "--budget", "12", "-o", str(tmp_path / "no" / "t.json"))
    assert code == 2
    assert_one_line_error(err, "t.json")


def test_commands_are_a_table_others_can_extend(capsys):
    seen = []
    command = cli.Command("echo-k", "test command", lambda p: p.add_argument("--k", type=int, required=True),
                          lambda args: seen.append(args.k) or 0)
    cli.register(command)
    try:
        code, _, _ = run_main(capsys, "echo-k", "--k", "3")
        assert code == 0 and seen == [3]
    finally:
        del cli.COMMANDS["echo-k"]


# --- plotting (the module behind `plot`) --------------------------------------------------------------

def test_plot_rows_labels_and_sigma_panel(tmp_path):
    from otcache_engine.plotting import plot_schedules, save_plot
    sig = [1.0 - n / 50 for n in range(50)] + [0.0]
    ref = schedule_io.load(REF).replace(sigmas=sig)
    fig = plot_schedules([ref, schedule_io.load(ANC)], ["ref", "anc"])
    axes = fig.get_axes()
    assert len(axes) == 2  # sigma panel + rows
    labels = [t.get_text() for t in axes[1].get_yticklabels()]
    assert labels == ["ref  K=26/50  1.92x", "anc  K=10/50  5.00x"]
    assert len(axes[1].patches) == 100  # one cell per step per row
    assert len(plot_schedules([schedule_io.load(ANC)]).get_axes()) == 1  # no grid, no sigma panel
    assert save_plot([ref], tmp_path / "r.svg").read_text().startswith("<?xml")


def test_plot_without_matplotlib_is_one_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    code, _, err = run_main(capsys, "plot", REF, "-o", str(tmp_path / "x.png"))
    assert code == 2
    assert_one_line_error(err, "pip install matplotlib")
