"""Block replacement functions for ``patches_replace["dit"]``: pass through or compute, then cache.

One function per block index of the stack. On a step that reuses, every block
returns its input unchanged (the middle ones without touching a tensor) and the
last one adds the cached image-token residual. On a computed step each block
calls what was there before us (another node's replacement, or the original
block), and the last one stores out - in for the image tokens, per cond stream.

The per-call state (``CallState``) is set by the DIFFUSION_MODEL wrapper for the
duration of one cached call, in a context variable (``current_call``): blocks find
it whatever their arguments carry (Wan S2V in ComfyUI 0.3.64 passes its blocks no
``transformer_options``); a block called outside a cached call (no run, a
bypassed call) just runs its inner. The stream a block receives ("img") is a
tensor, or a tuple of streams for LTX-2 (``streams``). A family whose forward adds
to the stream between blocks (Wan VACE hints, S2V audio, Animate face features)
gets the last block's output on a reused step from the stack's input: what was
added between blocks at the computed step is in the residual, so it must not be
added a second time.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Callable

import torch

from . import streams
from .families import IMG_ONLY, TXT_FIRST

RUN_KEY = "otcache_run"
MARK = "_otcache_token"
INNER = "_otcache_inner"

Block = Callable[[dict, dict], dict]

# The block-cached call running on this thread (a CallState), set by RunState for one cached call.
current_call: ContextVar["CallState | None"] = ContextVar("otcache_current_call", default=None)


class CallState:
    """One diffusion-model call: the decision, its streams, and what the blocks hand to each other."""

    __slots__ = ("run", "d", "uuids", "compute", "forced", "residual", "h_in", "sig", "reached", "boundary",
                 "pending")

    def __init__(self, run: Any, d: Any, uuids: list) -> None:
        self.run = run                # the RunState this call belongs to
        self.d = d
        self.uuids = uuids
        self.compute = d.compute      # the step's decision; False -> the blocks pass through, the cache is added
        self.forced = False
        self.residual: torch.Tensor | None = None
        self.h_in: torch.Tensor | None = None   # the stack's input (a copy), where the residual starts
        self.sig: tuple | None = None
        self.reached = False
        self.boundary: torch.Tensor | None = None
        self.pending: Callable[[], Any] | None = None   # work skipped for a reuse, owed if it computes

    def compute_anyway(self) -> None:
        """The step was to reuse but no cache fits: compute it, after what was skipped for the reuse."""
        self.compute, self.forced = True, True
        if self.pending is not None:
            self.pending()
            self.pending = None


def make_block_patch(token: object, inner: Block | None, *, first: bool, last: bool,
                     boundary: bool = False, joint_first: bool = False,
                     original: Callable[[dict], dict] | None = None) -> Block:
    """The replacement for one block. ``inner`` is the replacement that was there before (or None).

    ``boundary``: the last block before the joint stream (keeps its output once per run so the
    first joint block can check where the image tokens are); ``joint_first``: that first joint block.
    ``original``: runs the block where ComfyUI's own ``original_block`` cannot (``own_block``).
    """
    def run_block(args: dict, extra: dict) -> dict:
        if inner is not None:
            return inner(args, extra)
        return original(args) if original is not None else extra["original_block"](args)

    if not (first or last or boundary or joint_first):
        def middle(args: dict, extra: dict) -> dict:
            call = current_call.get()
            if call is not None and not call.compute:
                return args
            return run_block(args, extra)
        patch = middle
    else:
        def edge(args: dict, extra: dict) -> dict:
            call = current_call.get()
            if call is None:
                return run_block(args, extra)
            run = call.run
            if first:
                enter(run, call, args[run.key])
            if not call.compute:
                return _with_residual(run, args, call) if last else args
            if joint_first and call.boundary is not None:
                run.check_layout(args, call)
            out = run_block(args, extra)
            if boundary and not run.layout_checked:
                call.boundary = out[run.key]
            if last:
                _store(run, args, out[run.key], call)
            return out
        patch = edge
    setattr(patch, MARK, token)
    setattr(patch, INNER, inner)
    return patch


def enter(run: Any, call: CallState, img: Any) -> None:
    """The stack starts: take the reused residual, or compute (no fitting cache); keep what a store needs."""
    call.reached = True
    call.sig = streams.signature(img)
    if not call.compute:
        r = run.session.predict_batch(call.uuids, call.d, call.sig, streams.lead(img).device)
        if r is None:
            call.compute_anyway()
        else:
            call.residual = r
    if (call.d.store and call.compute) or (run.between and not call.compute):
        call.h_in = streams.snapshot(img)


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
    x = args[run.key]
    r = call.residual
    if run.between:   # the stack's input plus the residual: what was added between blocks is in the residual
        new = streams.added(streams.like(call.h_in, x), r)
    elif run.joint_order == IMG_ONLY and streams.signature(x) == call.sig:
        new = streams.added(x, r)
    else:
        # The joint stream was made by the model's own torch.cat on this call and is referenced
        # nowhere else (every block passed it through), so adding in place saves a full copy.
        length = r.shape[1]
        a = image_start(run, args, x.shape[1], length)
        x[:, a:a + length] += r
        new = x
    out = {run.key: new}
    if "txt" in args:
        out["txt"] = args["txt"]
    return out


def _store(run: Any, args: dict, y: Any, call: CallState) -> None:
    h = call.h_in
    call.h_in = None
    if h is None or not call.d.store or run.broken:
        return
    if run.joint_order == IMG_ONLY:
        res = streams.residual(y, h)
        if res is None:
            run.layout_mismatch += 1
        else:
            run.session.store_batch(call.uuids, res, call.d, call.sig)
        return
    length = h.shape[1]
    a = image_start(run, args, y.shape[1], length)
    if y.shape[0] != h.shape[0] or y.shape[1] < a + length or y.shape[2:] != h.shape[2:]:
        run.layout_mismatch += 1
        return
    res = (y[:, a:a + length] if (a or y.shape[1] != length) else y) - h
    run.session.store_batch(call.uuids, res, call.d, call.sig)


def own_block(block: torch.nn.Module, names: tuple[str, ...], key: str) -> Callable[[dict], dict]:
    """Runs ``block`` from the hook's arguments ``names`` (in the block's parameter order), returning its
    output under ``key``: for a family whose ``original_block`` fails (Kandinsky 5 in ComfyUI 0.33)."""
    def run(args: dict) -> dict:
        return {key: block(*(args[n] for n in names), transformer_options=args.get("transformer_options", {}))}
    return run


def is_ours(fn: Any, token: object | None = None) -> bool:
    t = getattr(fn, MARK, None)
    return t is not None and (token is None or t is token)


def unwrap(fn: Any) -> Any:
    """What one of our replacements wrapped (None when it wrapped the original block)."""
    return getattr(fn, INNER, None)
