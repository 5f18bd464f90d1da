"""Write a tiny, seeded Wan 2.1 T2V diffusion-model file that ComfyUI's own loader detects and loads.

Run with the Python of the ComfyUI under test, from anywhere:
    python make_tiny_checkpoint.py COMFYUI_DIR OUT.safetensors [SEED]

Wan is the family whose detection reads every width from the tensor shapes in both host versions (heads =
dim // 128), so a 128-wide, 2-layer model (~7 MB) loads through UNETLoader like a real checkpoint.
``tiny_wan_state`` gives the same tensors in-process (ComfyUI importable) for tests that write other formats.
"""
import sys


def tiny_wan_state(seed: int = 0) -> dict:
    """The seeded float16 state dict of the tiny Wan model, keyed as a diffusion-model file is."""
    import torch
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    model = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=128, ffn_dim=256,
                     freq_dim=256, text_dim=4096, out_dim=16, num_heads=1, num_layers=2,
                     operations=comfy.ops.disable_weight_init)
    state = {}
    for i, (name, tensor) in enumerate(sorted(model.state_dict().items())):
        g = torch.Generator().manual_seed(seed * 100_003 + i)
        value = torch.randn(tensor.shape, generator=g) * 0.02
        if name.endswith("norm.weight") or name.endswith("norm_q.weight") or name.endswith("norm_k.weight"):
            value = torch.ones(tensor.shape)
        state[name] = value.to(torch.float16).contiguous()
    return state


def main(comfy_dir: str, out: str, seed: int = 0) -> None:
    sys.path.insert(0, comfy_dir)
    from comfy.cli_args import args

    args.cpu = True
    from safetensors.torch import save_file

    save_file(tiny_wan_state(seed), out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
