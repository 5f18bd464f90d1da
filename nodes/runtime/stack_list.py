"""Block caching for a forward that iterates its block lists itself (NextDiT: Lumina 2, Z-Image; HiDream).

Such a forward runs ``for block in self.layers: x = block(x, ...)`` and offers no block-replacement hook, so
its blocks cannot be reached one by one through ``patches_replace``. The patched clone gets instead, through
ComfyUI's own ``ModelPatcher.add_object_patch("diffusion_model.<list>", ...)``, a stand-in for each block list:
a :class:`StackList`, a ModuleList holding the very same blocks under the very same names, so that weight
patches (LoRA), low-VRAM loading, state-dict keys and TorchCompileModel's compiled blocks (set into it by name)
find them where they were. It differs from the list in one thing: what iterating it yields inside a cached
call of this install (``block_patch.current_call`` carrying this install's token):

- the first list's first block comes wrapped: it takes the stack's input and the step's decision
  (``block_patch.enter``: the cached residual, or a compute when no cache fits);
- on a computed step every block runs, and the last list's last block comes wrapped to store the image-token
  residual (its output minus the stack's input);
- on a reused step each list yields one stand-in instead of its blocks, which hands back what a block of that
  list would (``Family.returns``: the stream, and the other arguments a block returns, unchanged); the last
  list's adds the cached residual to the image tokens. The stack runs or is skipped as one decision, and the
  forward's own work around each list (HiDream's concatenations and slices) runs as on a computed step.

Anywhere else (no run, another install's run, a bypassed call) it yields the blocks as the list does, so a
stand-in is inert outside its own runs, and it holds no run state. ComfyUI sets an object patch on the shared
model only while the clone is the loaded patcher, and puts its own backup of the original list back whenever
the model unpatches, another clone of it loads or it unloads. ``remove_stack_lists`` takes the object patches
off a clone (``patcher.remove_otcache``, a re-Apply), giving back any object patch they stood in for.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterator

import torch

from .block_patch import CallState, current_call, enter
from .families import IMG_ONLY, TXT_FIRST, FamilySpec

_HOOK = "_otcache_stack"


class Hook:
    """What a stand-in knows: whose it is and the list it stands for."""

    __slots__ = ("token", "inner", "patched")

    def __init__(self, token: object, inner: torch.nn.ModuleList, patched: bool) -> None:
        self.token = token
        self.inner = inner          # the list it stands for
        self.patched = patched      # ``inner`` was the clone's own object patch (given back on removal)


class _StackHook(Hook):
    """A block list's place in the stack and how its blocks are called."""

    __slots__ = ("entry", "exit", "returns", "positions", "order")

    def __init__(self, token: object, inner: torch.nn.ModuleList, patched: bool, entry: bool, exit_: bool,
                 returns: tuple[str, ...], positions: tuple[int, ...], order: str) -> None:
        super().__init__(token, inner, patched)
        self.entry, self.exit = entry, exit_
        self.returns, self.positions, self.order = returns, positions, order


class StandIn(torch.nn.ModuleList):
    """A list's stand-in on a patched clone: the same blocks under the same names, iterated as a list."""

    @classmethod
    def standing_for(cls, inner: torch.nn.ModuleList, hook: Hook) -> "StandIn":
        s = cls()
        for name, block in inner._modules.items():
            s._modules[name] = block          # the same modules under the same names: same keys everywhere
        s.training = inner.training
        s.__dict__[_HOOK] = hook               # kept out of _modules: not a child module, no state-dict key
        return s

    def own_call(self) -> tuple[Any, CallState | None]:
        """This stand-in's hook, and the cached call of its own install running now (else None)."""
        hook = self.__dict__.get(_HOOK)
        call = current_call.get()
        return hook, (call if hook is not None and call is not None and call.run.token is hook.token else None)


class StackList(StandIn):
    """A block list of the stack: its iteration takes the step's decision (module docstring)."""

    def __iter__(self) -> Iterator[Any]:
        hook, call = self.own_call()
        if call is None or not (hook.entry or call.reached):
            return iter(self._modules.values())
        return _items(hook, call, list(self._modules.values()))


def _items(hook: _StackHook, call: CallState, blocks: list) -> Iterator[Callable[..., Any]]:
    """What the forward's loop over this list gets inside a cached call."""
    first = 0
    if hook.entry:
        yield _stand_in(hook, call, blocks[0], stores=hook.exit and len(blocks) == 1)
        first = 1
        if not call.compute:
            return
    elif not call.compute:
        yield _stand_in(hook, call)
        return
    last = len(blocks) - 1
    for i in range(first, len(blocks)):
        yield _storing(call, blocks[i]) if hook.exit and i == last else blocks[i]


def _stand_in(hook: _StackHook, call: CallState, block: Any = None, stores: bool = False) -> Callable[..., Any]:
    """The first block (``block`` given: it decides), or a whole list on a reused step (hands back its input,
    plus the cached residual when it ends the stack)."""
    def stand_in(*args: Any, **kwargs: Any) -> Any:
        x = _arg(hook, 0, args, kwargs)
        if block is not None:
            enter(call.run, call, x)
        if call.compute:
            out = block(*args, **kwargs)
            if stores:
                _store(call, out)
            return out
        return _hand_back(hook, args, kwargs, _with_residual(hook, call, x) if hook.exit else x)
    return stand_in


def _storing(call: CallState, block: Any) -> Callable[..., Any]:
    def last_block(*args: Any, **kwargs: Any) -> Any:
        out = block(*args, **kwargs)
        _store(call, out)
        return out
    return last_block


def _arg(hook: _StackHook, i: int, args: tuple, kwargs: dict) -> Any:
    name = hook.returns[i]
    if name in kwargs:
        return kwargs[name]
    pos = hook.positions[i]
    return args[pos] if pos < len(args) else None


def _hand_back(hook: _StackHook, args: tuple, kwargs: dict, stream: Any) -> Any:
    if len(hook.returns) == 1:
        return stream
    return (stream,) + tuple(_arg(hook, i, args, kwargs) for i in range(1, len(hook.returns)))


def _image_start(order: str, total: int, length: int) -> int:
    return total - length if order == TXT_FIRST else 0


def _with_residual(hook: _StackHook, call: CallState, x: torch.Tensor) -> torch.Tensor:
    """The stack's output on a reused step: the stream with the cached residual added to its image tokens
    (their values there are the stack's input: every list handed its input back)."""
    r = call.residual
    if hook.order == IMG_ONLY and x.shape == r.shape:
        return x + r
    length = r.shape[1]
    a = _image_start(hook.order, x.shape[1], length)
    if hook.order == IMG_ONLY or x.shape[0] != r.shape[0] or x.shape[1] < a + length or x.shape[2:] != r.shape[2:]:
        raise RuntimeError(f"OTCache: the stream at the end of {call.run.cfg.family.class_name}'s block stack "
                           f"{tuple(x.shape)} does not hold the cached image tokens {tuple(r.shape)}")
    out = x.clone()
    out[:, a:a + length] += r
    return out


def _store(call: CallState, out: Any) -> None:
    """Keep the image-token residual of this computed step (last block's output minus the stack's input)."""
    run, h = call.run, call.h_in
    call.h_in = None
    if h is None or not call.d.store or run.broken:
        return
    y = out if torch.is_tensor(out) else out[0]
    length = h.shape[1]
    a = _image_start(run.joint_order, y.shape[1], length)
    whole = run.joint_order != IMG_ONLY or y.shape[1] == length
    if not whole or y.shape[0] != h.shape[0] or y.shape[1] < a + length or y.shape[2:] != h.shape[2:]:
        run.layout_mismatch += 1
        return
    res = (y[:, a:a + length] if (a or y.shape[1] != length) else y) - h
    run.session.store_batch(call.uuids, res, call.d, call.sig)


# ------------------------------------------------------------------------------------- installation

def _lists(spec: FamilySpec) -> list[tuple[str, tuple[str, ...]]]:
    """(attribute, returns) of the family's lists that hold blocks of the stack, in execution order."""
    used = {kind for kind, _ in spec.blocks}
    return [(attr, names) for (attr, kind), names in zip(spec.lists, spec.returns) if kind in used]


def underlying(m: Any, key: str) -> tuple[Any, bool]:
    """The list the clone would run without OTCache, and whether it is the clone's own object patch."""
    obj = m.get_model_object(key)
    patched = key in m.object_patches
    hook = obj.__dict__.get(_HOOK) if isinstance(obj, StandIn) else None
    return (hook.inner, hook.patched) if hook is not None else (obj, patched)


def _positions(block: torch.nn.Module, names: tuple[str, ...]) -> tuple[int, ...] | None:
    params = list(inspect.signature(block.forward).parameters)
    return tuple(params.index(n) for n in names) if all(n in params for n in names) else None


def usable(spec: FamilySpec, m: Any) -> FamilySpec:
    """``spec``, or the whole-model fallback with the reason when this clone's lists cannot stand in: another
    node replaced a list by its own kind of list (its iteration would be lost), or the blocks' call changed."""
    if not spec.list_hook:
        return spec
    for attr, names in _lists(spec):
        inner, _ = underlying(m, f"diffusion_model.{attr}")
        if type(inner) is not torch.nn.ModuleList:
            return FamilySpec("generic", spec.class_name, reason=f"another node replaced its block list {attr!r}")
        if _positions(inner[0], names) is None:
            return FamilySpec("generic", spec.class_name, reason=f"its {attr} blocks do not take {list(names)}")
    return spec


def add_stack_lists(m: Any, token: object, spec: FamilySpec) -> None:
    """Stand-ins for the family's block lists on clone ``m`` (object patches: applied while it is loaded)."""
    lists = _lists(spec)
    for j, (attr, names) in enumerate(lists):
        key = f"diffusion_model.{attr}"
        inner, patched = underlying(m, key)
        hook = _StackHook(token, inner, patched, j == 0, j == len(lists) - 1, names, _positions(inner[0], names),
                          spec.joint_order)
        m.add_object_patch(key, StackList.standing_for(inner, hook))


def remove_stack_lists(m: Any) -> None:
    """Take every OTCache stand-in (``side_lists``' too) off clone ``m``, giving back the object patch it stood
    in for, if any."""
    for key, obj in list(getattr(m, "object_patches", {}).items()):
        hook = obj.__dict__.get(_HOOK) if isinstance(obj, StandIn) else None
        if hook is None:
            continue
        if hook.patched:
            m.object_patches[key] = hook.inner
        else:
            del m.object_patches[key]
