"""Block replacement functions for ``patches_replace["dit"]``: pass through or compute, then cache.

One function per block index of the stack. On a step that reuses, every block
returns its input unchanged (the middle ones without touching a tensor) and the
last one adds the cached image-token residual. On a computed step each block
calls what was there before us (another node's replacement, or the original
block), and the last one stores out - in for the image tokens, per cond stream.

The per-call state (``CallState``) is set by the DIFFUSION_MODEL wrapper on the
run's ``RunState``, found through ``args["transformer_options"]``; a block
called outside a cached call (no run, a bypassed call) just runs its inner.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .families import IMG_ONLY, TXT_FIRST

RUN_KEY = "otcache_run"
MARK = "_otcache_token"
INNER = "_otcache_inner"

Block = Callable[[dict, dict], dict]


class CallState:
    """One diffusion-model call: the decision, its streams, and what the blocks hand to each other."""

    __slots__ = ("d", "uuids", "compute", "forced", "residual", "h_in", "reached", "boundary", "pending")

    def __init__(self, d: Any, uuids: list) -> None:
        self.d = d
        self.uuids = uuids
        self.compute = d.compute      # the step's decision; False -> the blocks pass through, the cache is added
        self.forced = False
        self.residual: torch.Tensor | None = None
        self.h_in: torch.Tensor | None = None
        self.reached = False
        self.boundary: torch.Tensor | None = None
        self.pending: Callable[[], Any] | None = None   # work skipped for a reuse, owed if it computes

    def compute_anyway(self) -> None:
        """The step was to reuse but no cache fits: compute it, after what was skipped for the reuse."""
        self.compute, self.forced = True, True
        if self.pending is not None:
            self.pending()
            self.pending = None


def _call_of(args: dict) -> tuple[Any, CallState | None]:
    to = args.get("transformer_options")
    run = to.get(RUN_KEY) if to is not None else None
    return run, (run.call if run is not None else None)


def make_block_patch(token: object, inner: Block | None, *, first: bool, last: bool,
                     boundary: bool = False, joint_first: bool = False) -> Block:
    """The replacement for one block. ``inner`` is the replacement that was there before (or None).

    ``boundary``: the last block before the joint stream (keeps its output once per run so the
    first joint block can check where the image tokens are); ``joint_first``: that first joint block.
    """
    def run_block(args: dict, extra: dict) -> dict:
        return inner(args, extra) if inner is not None else extra["original_block"](args)

    if not (first or last or boundary or joint_first):
        def middle(args: dict, extra: dict) -> dict:
            to = args.get("transformer_options")
            run = to.get(RUN_KEY) if to is not None else None
            if run is not None:
                call = run.call
                if call is not None and not call.compute:
                    return args
            return run_block(args, extra)
        patch = middle
    else:
        def edge(args: dict, extra: dict) -> dict:
            run, call = _call_of(args)
            if call is None:
                return run_block(args, extra)
            if first:
                call.reached = True
                img = args["img"]
                if not call.compute:
                    r = run.session.predict_batch(call.uuids, call.d, tuple(img.shape), img.device)
                    if r is None:
                        call.compute_anyway()
                    else:
                        call.residual = r
                if call.compute and call.d.store:
                    # A copy: newer ComfyUI blocks update their input in place (img += ...).
                    call.h_in = img.clone()
            if not call.compute:
                return _with_residual(run, args, call) if last else args
            if joint_first and call.boundary is not None:
                run.check_layout(args, call)
            out = run_block(args, extra)
            if boundary and not run.layout_checked:
                call.boundary = out["img"]
            if last:
                _store(run, args, out, call)
            return out
        patch = edge
    setattr(patch, MARK, token)
    setattr(patch, INNER, inner)
    return patch


def image_start(run: Any, args: dict, total: int, length: int) -> int:
    """First image token in the last block's "img" (joint stream or image only)."""
    order = run.joint_order
    if order == IMG_ONLY:
        return 0
    sl = args["transformer_options"].get("img_slice")
    if sl is not None and run.trust_img_slice:
        return int(sl[0])
    return total - length if order == TXT_FIRST else 0


def _with_residual(run: Any, args: dict, call: CallState) -> dict:
    x = args["img"]
    r = call.residual
    if run.joint_order == IMG_ONLY and x.shape == r.shape:
        new = x + r
    else:
        # The joint stream was made by the model's own torch.cat on this call and is referenced
        # nowhere else (every block passed it through), so adding in place saves a full copy.
        length = r.shape[1]
        a = image_start(run, args, x.shape[1], length)
        x[:, a:a + length] += r
        new = x
    out = {"img": new}
    if "txt" in args:
        out["txt"] = args["txt"]
    return out


def _store(run: Any, args: dict, out: dict, call: CallState) -> None:
    h = call.h_in
    call.h_in = None
    if h is None or not call.d.store or run.broken:
        return
    y = out["img"]
    length = h.shape[1]
    a = image_start(run, args, y.shape[1], length)
    if y.shape[0] != h.shape[0] or y.shape[1] < a + length or y.shape[2:] != h.shape[2:]:
        run.layout_mismatch += 1
        return
    res = (y[:, a:a + length] if (a or y.shape[1] != length) else y) - h
    run.session.store_batch(call.uuids, res, call.d, tuple(h.shape))


def is_ours(fn: Any, token: object | None = None) -> bool:
    t = getattr(fn, MARK, None)
    return t is not None and (token is None or t is token)


def unwrap(fn: Any) -> Any:
    """What one of our replacements wrapped (None when it wrapped the original block)."""
    return getattr(fn, INNER, None)
