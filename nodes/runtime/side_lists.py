"""Work beside the block stack that a reused step does not need: Kandinsky 5's text blocks, Wan VACE's hints.

On a reused step no block of the stack runs and the model's output comes from the stack's input plus the cached
residual (``block_patch``). Two families run another block list beside the stack on every step:

- Kandinsky 5's text blocks refine the text tokens before the stack, and only the stack's blocks read them
  (cross-attention; the output layer reads the image tokens and the time embedding). On a reused step nothing
  reads them, so the list's stand-in hands its input back without running a block. When the step computes
  after all (no cache fits, found at the stack's first block: ``CallState.compute_anyway``), the text blocks
  run then, before any stack block reads the text, and their output is written into the tensor handed out
  (``CallState.pending``), so a forced compute is the full model.
- Wan VACE's hint blocks, a chain (each takes the previous one's state) whose outputs are added to the stream
  after mapped blocks of the stack. On a reused step the stack's output is rebuilt from its input plus the
  residual (``Family.between_blocks``), which replaces everything added between blocks: a hint added after
  any block but the last is thrown away, so the stand-in (the forward indexes the list) hands back a zero hint
  and the chain's state unchanged. A hint added after the stack's last block lands on the rebuilt output
  itself; a model that maps one there (every earlier hint feeds it) keeps running its hints on every step.
  The released VACE models map hints to every 2nd (1.3B) or 5th (14B) block from the first: never the last.

Both stand-ins are ``stack_list.StandIn`` lists (the same blocks under the same names, an object patch on the
clone, taken off with it) and act only inside a reused call of their own install; the maths of every step is
unchanged, only work whose result is never read is left out.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from .block_patch import CallState
from .families import FamilySpec
from .stack_list import Hook, StandIn, underlying


class InputList(StandIn):
    """A list run before the stack whose output only the stack's blocks read (Kandinsky 5's text blocks)."""

    def __iter__(self) -> Iterator[Any]:
        _, call = self.own_call()
        if call is None or call.compute:
            return iter(self._modules.values())
        return iter((_late(call, list(self._modules.values())),))


class AddedList(StandIn):
    """A list whose outputs the forward adds between the stack's blocks, indexed by the forward (VACE hints)."""

    def __getitem__(self, idx: Any) -> Any:
        block = super().__getitem__(idx)
        _, call = self.own_call()
        if call is None or call.compute or not call.reached or not isinstance(idx, int):
            return block
        return _no_hint


def _late(call: CallState, blocks: list) -> Callable[..., Any]:
    """The whole list on a reused step: hands its input back; runs the blocks only if the step computes."""
    def skipped(*args: Any, **kwargs: Any) -> Any:
        x = args[0]
        out = x.clone()

        def run_now() -> None:
            y = x
            for block in blocks:
                y = block(y, *args[1:], **kwargs)
            out.copy_(y)

        _owe(call, run_now)
        return out
    return skipped


def _owe(call: CallState, work: Callable[[], None]) -> None:
    earlier = call.pending
    call.pending = work if earlier is None else (lambda: (earlier(), work()))


def _no_hint(state: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A hint block on a reused step: no hint (its sum would be replaced anyway), the chain's state as it was."""
    return state.new_zeros(()), state


def add_side_lists(m: Any, token: object, spec: FamilySpec) -> None:
    """Stand-ins for the lists beside the stack that a reused step of clone ``m`` need not run (object patches)."""
    dm = m.get_model_object("diffusion_model")
    last = spec.blocks[-1][1]
    lists: list[tuple[str, type[StandIn]]] = [(attr, InputList) for attr in spec.side_input]
    for attr, mapping in spec.side_added if spec.between_blocks else ():   # the rebuild makes them dead
        where = getattr(dm, mapping, None)
        if isinstance(where, dict) and last not in where:   # no hint lands on the stack's output itself
            lists.append((attr, AddedList))
    for attr, kind in lists:
        key = f"diffusion_model.{attr}"
        inner, patched = underlying(m, key)
        if type(inner) is torch.nn.ModuleList and len(inner):   # another node's own kind of list: left alone
            m.add_object_patch(key, kind.standing_for(inner, Hook(token, inner, patched)))
