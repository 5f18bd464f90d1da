"""Model identity and the provenance checks OTCache Apply calls."""
from __future__ import annotations

import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import sampling  # noqa: E402
import tiny_models  # noqa: E402
from otcache_pack.nodes.runtime import provenance as P  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402


def test_model_hash_is_stable_and_tells_models_apart():
    a = tiny_models.build_patcher("flux", seed=0)
    same = tiny_models.build_patcher("flux", seed=0)
    other = tiny_models.build_patcher("flux", seed=1)
    assert P.model_hash(a) == P.model_hash(a.clone()) == P.model_hash(same)
    assert P.model_hash(a) != P.model_hash(other)
    assert len(P.model_hash(a)) == P.HASH_CHARS
    assert P.model_family(a) == "flux" and P.model_family(tiny_models.build_patcher("wan21")) == "wan"


def test_a_weight_patch_changes_the_identity_but_sampling_with_it_does_not():
    bundle = tiny_models.build("flux")
    plain = P.model_hash(bundle.patcher)
    patched = bundle.patcher.clone()
    dm = patched.get_model_object("diffusion_model")
    key = "diffusion_model." + P.sampled_keys(dm.state_dict())[0]   # a tensor whose values are hashed
    weight = patched.model.state_dict()[key]
    patched.add_patches({key: (torch.full_like(weight, 0.01),)}, strength_patch=0.5)
    before = P.model_hash(patched)
    assert before != plain
    P._cache.clear()                                           # hash again from the weights as they are now
    sampling.run_sampler(patched, bundle, steps=2, cfg=1.0)   # loads the model with the patch applied in place
    dm_key = key[len("diffusion_model."):]
    live = patched.get_model_object("diffusion_model").state_dict()[dm_key]
    assert not torch.equal(live, patched.backup[key].weight)  # still loaded: live weights are the patched ones
    assert P.model_hash(patched) == before
    assert P.weights_hash(dm) != P.weights_hash(dm, P._originals(patched))   # the live values would differ
    assert P.model_hash(bundle.patcher) == plain


def test_run_provenance_and_checks():
    bundle = tiny_models.build("flux")
    m = bundle.patcher
    latent = bundle.empty_latent()
    prov = P.run_provenance(m, steps=10, sampler="euler", scheduler="simple", latent_shape=latent.shape,
                            sigmas=[1.0 - k / 10 for k in range(11)], cfg=1.0)
    assert prov["resolution"] == "64x64" and prov["model_family"] == "flux" and prov["steps"] == 10
    s = Schedule(10, (0, 2, 5, 9), kind="reference", provenance=prov)
    assert P.check_schedule(s, m, steps=10, sampler="euler", scheduler="simple", resolution="64x64",
                            sigmas=[1.0 - k / 10 for k in range(11)]) == []
    other = tiny_models.build_patcher("flux", seed=5)
    (w,) = P.check_model(s, other)
    assert "another model" in w
    (w,) = P.check_model(s, tiny_models.build_patcher("wan21"))
    assert "flux model" in w and "wan" in w
    warnings = P.check_run(s, steps=20, sampler="heun", resolution="128x128")
    assert len(warnings) == 3 and "10 steps, used with 20" in warnings[0]
    assert P.check_run(s, sigmas=[1.0 - k / 20 for k in range(11)])[0].startswith("the run's noise levels")
    assert P.check_schedule(Schedule(10, (0, 9)), m, steps=10) == []   # no provenance: nothing to compare
