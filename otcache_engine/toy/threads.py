"""Run a command with a chosen torch thread count, restoring the caller's afterwards.

The tiny model is as fast on one thread as on two and far steadier on a busy machine, so the
demo and the bench pick their thread count; a caller (tests, a notebook) keeps its own.
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch


def with_threads(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(previous)
