"""The text side of the benchmark models: prompts are words, a frozen table turns words into embeddings.

A real text encoder cannot be had here, and the benchmark only needs the *output* to depend on the prompt the
way it does in a real model: through cross-attention on a sequence of token embeddings (and, for Flux, a
pooled vector). So every word of the toy vocabulary (the colours and shapes of ``toy.data``, plus a padding
token) gets a fixed random embedding drawn from a generator seeded by the word itself. A prompt such as
"red circle" is the token sequence [red, circle, pad, ...]; the empty prompt (the negative, and the dropped
label of classifier-free guidance training) is all padding. The same word gives the same vector on every
machine and torch version that keeps ``torch.Generator`` streams stable.
"""
from __future__ import annotations

import zlib
from functools import lru_cache

import torch

from otcache_pack.benchmarks.toy import data

TOKENS = 8            # context length (T5-style: content tokens, then padding)
WIDTH = 4096          # T5-XXL width, what Wan 2.1 and Flux take as context
POOLED = 768          # CLIP-L pooled width (Flux's ``y``)
PAD = "<pad>"
NUM_PROMPTS = data.NUM_CLASSES


def prompt_text(index: int) -> str:
    """The words of prompt ``index`` ('red circle', ...): one per toy class."""
    return data.class_name(index)


@lru_cache(maxsize=None)
def _vector(word: str, width: int, salt: int) -> torch.Tensor:
    seed = (zlib.crc32(word.encode()) * 7919 + salt) % (2**62)
    return torch.randn(width, generator=torch.Generator().manual_seed(seed))


def tokens(index: int | None) -> list[str]:
    """Token words of a prompt (None: the empty prompt)."""
    words = [] if index is None else prompt_text(index).split()
    return words + [PAD] * (TOKENS - len(words))


def context(indices: list[int | None]) -> torch.Tensor:
    """(B, TOKENS, WIDTH) token embeddings of a batch of prompts."""
    return torch.stack([torch.stack([_vector(w, WIDTH, 1) for w in tokens(i)]) for i in indices])


def pooled(indices: list[int | None]) -> torch.Tensor:
    """(B, POOLED) pooled vectors: the mean of the prompt's content words (the padding word for empty)."""
    rows = []
    for i in indices:
        words = [w for w in tokens(i) if w != PAD] or [PAD]
        rows.append(torch.stack([_vector(w, POOLED, 2) for w in words]).mean(0))
    return torch.stack(rows)


def conditioning(indices: list[int | None], with_pooled: bool) -> list:
    """ComfyUI CONDITIONING ``[[context, extras]]`` for a batch of prompts (batch = len(indices))."""
    extras = {"pooled_output": pooled(indices)} if with_pooled else {}
    return [[context(indices), extras]]
