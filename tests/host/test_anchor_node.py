"""OTCache Anchor Search end to end on a tiny Flux: trials, resume, metrics, interruption, storage."""
from __future__ import annotations

import math

import optuna
import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import comfy.model_management as mm  # noqa: E402
import folder_paths  # noqa: E402

import tiny_models  # noqa: E402
from otcache_pack.nodes import anchor_node as A  # noqa: E402
from otcache_pack.nodes import calibrate_node as C  # noqa: E402
from otcache_pack.nodes.measure.sampling import SamplerSettings  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402
from otcache_pack.otcache_engine.search.anchor_search import open_storage  # noqa: E402
from otcache_pack.otcache_engine.search.anchor_space import uniform_steps  # noqa: E402
from otcache_pack.otcache_engine.schedules.projection import is_feasible  # noqa: E402
from otcache_pack.nodes.measure import calibrate as MC  # noqa: E402
from otcache_pack.nodes.measure import anchor as MA  # noqa: E402

N = 10


class TinyVAE:
    """Stands in for a VAE: a fixed, smooth map from the latent to an RGB image twice its size."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        rgb = torch.sigmoid(latent[:, :3].float())
        return rgb.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2).permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def flux():
    b = tiny_models.build("flux")
    s = SamplerSettings(N, 1.0, "euler", "simple", b.positive, b.negative, {"samples": b.empty_latent()})
    reference, calibration = MC.calibrate(b.patcher, s, [0], mode="local", max_gap=3, budget=5)
    return b, s, reference, calibration


def finished(study):
    return [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]


def load_study(path):
    storage = open_storage(str(path))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def test_eight_trials_end_to_end_then_resume(flux, user_dir):
    b, s, reference, calibration = flux
    out = A.AnchorSearch.execute(b.patcher, b.positive, b.negative, s.latent, 0, N, 1.0, "euler", "simple", 1.0,
                                 reference, calibration=calibration, anchor_budget=3, trials=8)
    (anchor,) = out.args
    assert isinstance(anchor, Schedule) and anchor.kind == "anchor"
    assert anchor.budget == 3 and anchor.num_steps == N and is_feasible(anchor.compute_steps, N, anchor.max_gap)
    p = anchor.provenance
    assert p["trials"] == 8 and p["metric"] == "latent-rel-l1" and p["model_family"] == "flux"
    assert p["steps"] == N and p["sampler"] == "euler" and p["budget"] == 3
    journal = user_dir / "otcache" / f"anchor-{p['model_hash']}-{N}-3.journal"
    assert journal.is_file() and p["storage"] == str(journal)
    study = load_study(journal)
    warm = {name: t for t in study.trials for name in t.user_attrs.get("warm_start", "").split("+") if name}
    assert set(warm) == {"uniform", "graph", "reference-shape"}   # the graph one needs the calibration input
    assert tuple(warm["uniform"].user_attrs["schedule"]) == uniform_steps(N, 3, anchor.max_gap)
    assert tuple(warm["graph"].user_attrs["schedule"]) == calibration.graph_schedule(3, anchor.max_gap).compute_steps
    assert p["score"] == min(t.value for t in finished(study)) <= warm["uniform"].value
    (summary,) = out.ui["otcache_anchor"]
    assert summary["trials"] == 8 and summary["best_score"] == p["score"] and summary["graph_warm_start"]
    first = {t.number: (t.value, t.user_attrs["schedule"]) for t in finished(study)}

    again = A.AnchorSearch.execute(b.patcher, b.positive, b.negative, s.latent, 0, N, 1.0, "euler", "simple", 1.0,
                                   reference, calibration=calibration, anchor_budget=3, trials=12)
    (resumed,) = again.args
    assert resumed.provenance["trials"] == 12 and resumed.provenance["study"] == p["study"]
    study = load_study(journal)
    assert len(finished(study)) == 12
    assert all(study.trials[k].value == v and study.trials[k].user_attrs["schedule"] == sch
               for k, (v, sch) in first.items())
    assert resumed.provenance["score"] <= p["score"]


@pytest.fixture
def lpips_folder(tmp_path, monkeypatch):
    """An empty ComfyUI models folder (never the real one), no torch hub backbone, downloads turned off."""
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    monkeypatch.delitem(folder_paths.folder_names_and_paths, "otcache_lpips", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    monkeypatch.setenv("OTCACHE_NO_DOWNLOAD", "1")
    return tmp_path / "models" / "otcache" / "lpips"


def test_with_a_vae_the_metric_is_an_image_metric_and_the_fallback_is_loud(flux, user_dir, lpips_folder):
    b, s, reference, _ = flux
    anchor, summary = MA.anchor_search(b.patcher, s, reference, seeds=[0, 1], budget=3, trials=3, vae=TinyVAE())
    assert summary["metric"] == "1-ssim" and "alexnet-owt" in summary["warning"]
    assert str(lpips_folder) in summary["warning"] and "OTCACHE_NO_DOWNLOAD=1" in summary["warning"]
    assert anchor.provenance["metric"] == "1-ssim" and "LPIPS" in anchor.provenance["metric_warning"]
    assert 0.0 <= summary["best_score"] < 1.0 and anchor.provenance["pairs"] == 2


def test_with_the_backbone_in_the_models_folder_the_search_optimises_lpips(flux, user_dir, lpips_folder):
    from download_fixtures import alexnet_like_file
    from otcache_pack.otcache_engine.metrics import ALEXNET_FILE

    lpips_folder.mkdir(parents=True)
    (lpips_folder / ALEXNET_FILE).write_bytes(alexnet_like_file())   # already there: nothing is downloaded
    b, s, reference, _ = flux
    anchor, summary = MA.anchor_search(b.patcher, s, reference, seeds=[0], budget=3, trials=2, vae=TinyVAE(),
                                      validate=False)
    assert summary["metric"] == "lpips-alex" and summary["warning"] is None
    assert anchor.provenance["metric"] == "lpips-alex" and "metric_warning" not in anchor.provenance


def test_interrupt_during_a_trial_propagates_and_the_trial_is_redone(flux, user_dir):
    b, s, reference, _ = flux
    calls = []

    def count(_module, _inputs, _output):
        calls.append(1)
        if len(calls) == N + 4:          # during the first trial, after the uncached run
            mm.interrupt_current_processing(True)

    handle = b.last_block().register_forward_hook(count)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            MA.anchor_search(b.patcher, s, reference, seeds=[0], budget=3, trials=4, storage="interrupt-test")
    finally:
        handle.remove()
        mm.interrupt_current_processing(False)
    study = load_study(user_dir / "otcache" / "interrupt-test.journal")
    (stopped,) = [t for t in study.trials if t.state.name == "FAIL"]
    assert stopped.user_attrs["interrupted"] is True
    anchor, summary = MA.anchor_search(b.patcher, s, reference, seeds=[0], budget=3, trials=4,
                                      storage="interrupt-test")
    study = load_study(user_dir / "otcache" / "interrupt-test.journal")
    assert summary["trials"] == 4 == len(finished(study))
    assert any(t.user_attrs.get("retry_of") == stopped.number for t in finished(study))


def test_sqlite_url_storage_and_bad_inputs(flux, user_dir, tmp_path):
    b, s, reference, _ = flux
    url = f"sqlite:///{tmp_path / 'anchor.db'}"
    anchor, summary = MA.anchor_search(b.patcher, s, reference, seeds=[0], budget=2, trials=2, storage=url)
    assert summary["storage"] == url and anchor.budget == 2 and (tmp_path / "anchor.db").is_file()
    with pytest.raises(ValueError, match="OTCache Anchor Search: .*below the reference"):
        A.AnchorSearch.execute(b.patcher, b.positive, b.negative, s.latent, 0, N, 1.0, "euler", "simple", 1.0,
                               reference, anchor_budget=5, trials=2)
    with pytest.raises(ValueError, match="OTCache Anchor Search: .*no folders"):
        A.AnchorSearch.execute(b.patcher, b.positive, b.negative, s.latent, 0, N, 1.0, "euler", "simple", 1.0,
                               reference, anchor_budget=3, trials=2, storage="../../etc/x")
    assert MA.default_anchor_budget(50) == 10 and MA.default_anchor_budget(28) == 6


def test_a_reference_of_another_step_count_is_carried_as_apply_carries_it(flux, user_dir):
    """Reference K=3 of 6 on a 9-step run is K=5 (N/K kept, halves up, as Apply and the ladder round): an
    anchor at K=4 is below it, and the ladder runs up to it."""
    from otcache_pack.otcache_engine.schedules.warp import retarget

    b, s, _, _ = flux
    reference = Schedule(6, (0, 2, 5), kind="reference")
    assert retarget(reference, 9).budget == 5
    nine = SamplerSettings(9, 1.0, "euler", "simple", b.positive, b.negative, s.latent)
    anchor, _ = MA.anchor_search(b.patcher, nine, reference, seeds=[0], budget=4, trials=1, validate=False)
    assert anchor.budget == 4 and anchor.num_steps == 9
    with pytest.raises(MA.OTCacheError, match="below the reference's 5 computed steps"):
        MA.anchor_search(b.patcher, nine, reference, seeds=[0], budget=5, trials=1, validate=False)


def test_conditioning_changes_the_study(flux):
    b, s, _, _ = flux
    assert MA.conditioning_id(b.positive, b.negative) == MA.conditioning_id(b.positive, b.negative)
    other = [[b.positive[0][0] * 1.01, b.positive[0][1]]]
    assert MA.conditioning_id(other, b.negative) != MA.conditioning_id(b.positive, b.negative)
    assert math.isfinite(float(b.positive[0][0].sum()))


def test_my_nodes_are_registered_with_valid_schemas():
    from otcache_pack.nodes import NODE_CLASSES
    from otcache_pack.nodes.save_load_nodes import LoadSchedule, SaveSchedule
    ids = {}
    for cls in (C.Calibrate, A.AnchorSearch, SaveSchedule, LoadSchedule):
        assert cls in NODE_CLASSES
        cls.GET_SCHEMA()                    # ComfyUI's own validation (unique ids, types)
        schema = cls.define_schema()
        ids[schema.node_id] = schema
        assert schema.category == "OTCache"
    assert set(ids) == {"OTCacheCalibrate", "OTCacheAnchorSearch", "OTCacheSaveSchedule", "OTCacheLoadSchedule"}
    assert ids["OTCacheSaveSchedule"].is_output_node
    ksampler = ["model", "positive", "negative", "latent_image", "seed", "steps", "cfg", "sampler_name",
                "scheduler", "denoise"]
    for node in ("OTCacheCalibrate", "OTCacheAnchorSearch"):
        assert [i.id for i in ids[node].inputs][:10] == ksampler
    required = C.Calibrate.INPUT_TYPES()["required"]
    assert "N=28" in required["error_mode"][1]["tooltip"]


# --- storage checked before any model call, and kept inside user/otcache (issue #12 items 3, 9, 12) -------

def _model_calls(b):
    calls = []
    return calls, b.last_block().register_forward_hook(lambda *_: calls.append(1))


@pytest.mark.parametrize("storage, fragment", [
    ("x://y", "'x' is not a database SQLAlchemy knows"),
    ("file:///tmp/anchor.journal", "'file' is not a database"),
    ("sqlite:////nonexistent/folder/a.db", "folder '/nonexistent/folder' of the SQLite file does not exist"),
    ("postgresql://user:pw@127.0.0.1:1/otcache", "storage 'postgresql://user:***@127.0.0.1:1/otcache'"),
    ("sqlite:///../outside.db", "no folders"),
])
def test_a_bad_storage_is_one_sentence_before_any_model_call(flux, user_dir, storage, fragment):
    b, s, reference, _ = flux
    calls, handle = _model_calls(b)
    try:
        with pytest.raises(ValueError, match="^OTCache Anchor Search: ") as e:
            A.AnchorSearch.execute(b.patcher, b.positive, b.negative, s.latent, 0, N, 1.0, "euler", "simple", 1.0,
                                   reference, anchor_budget=3, trials=2, storage=storage)
    finally:
        handle.remove()
    assert fragment in str(e.value) and "\n" not in str(e.value) and "pw@" not in str(e.value)
    assert calls == []                       # not even the uncached reference run


def test_a_damaged_journal_is_refused_before_any_model_call(flux, user_dir):
    b, s, reference, _ = flux
    (user_dir / "otcache").mkdir(parents=True)
    (user_dir / "otcache" / "broken.journal").write_bytes(b"garbage\n")
    calls, handle = _model_calls(b)
    try:
        with pytest.raises(ValueError, match="broken.journal is damaged at line 1.*move it away"):
            MA.anchor_search(b.patcher, s, reference, seeds=[0], budget=3, trials=2, storage="broken")
    finally:
        handle.remove()
    assert calls == []


def test_a_storage_name_linked_out_of_user_otcache_is_refused(flux, user_dir, tmp_path):
    b, s, reference, _ = flux
    folder = user_dir / "otcache"
    folder.mkdir(parents=True)
    outside = tmp_path / "outside.journal"
    (folder / "evil.journal").symlink_to(outside)
    with pytest.raises(ValueError, match="'evil.journal' in user/otcache is a symbolic link; refused"):
        A.AnchorSearch.execute(b.patcher, b.positive, b.negative, s.latent, 0, N, 1.0, "euler", "simple", 1.0,
                               reference, anchor_budget=3, trials=2, storage="evil")
    assert not outside.exists()


def test_a_relative_sqlite_file_goes_into_user_otcache(flux, user_dir, tmp_path, monkeypatch):
    b, s, reference, _ = flux
    monkeypatch.chdir(tmp_path)              # ComfyUI's working directory: nothing may land here
    anchor, summary = MA.anchor_search(b.patcher, s, reference, seeds=[0], budget=2, trials=2,
                                      storage="sqlite:///relative.db")
    assert (user_dir / "otcache" / "relative.db").is_file() and not (tmp_path / "relative.db").exists()
    assert summary["storage"] == f"sqlite:///{user_dir / 'otcache' / 'relative.db'}" and summary["trials"] == 2
