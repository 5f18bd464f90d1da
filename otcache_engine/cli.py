"""``python -m otcache_engine``: schedules from the command line.

Subcommands live in ``COMMANDS`` (name -> Command); ``register(Command(...))`` adds one. Another
program with commands of its own (the toy model's ``python -m benchmarks.toy``) passes its table and
name to :func:`main` and gets the same error handling. Every expected failure
(bad file, infeasible or out-of-range budget, bad option) ends with exit code 2
and one ``error: ...`` line on stderr, never a traceback; engine warnings are
printed as ``warning: ...`` lines.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .schedules import schedule_io
from .errors import OTCacheError
from .schedules.schedule import Schedule

EXIT_OK = 0
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}
PROG = "python -m otcache_engine"


def register(command: Command, table: dict[str, Command] | None = None) -> Command:
    (COMMANDS if table is None else table)[command.name] = command
    return command


class UsageError(Exception):
    """Bad command-line usage (reported like bad input: exit 2, one line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{self.prog}: {message} (see --help)")


# --- interpolate -------------------------------------------------------------------

def _interpolate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("schedules", nargs="+", metavar="SCHEDULE.json",
                   help="reference and anchor (more files: piecewise geodesic through all of them)")
    p.add_argument("--budget", "-k", type=int, required=True, help="computed steps K of the new schedule")
    p.add_argument("--steps", "-n", type=int, default=None, help="retarget to this number of sampling steps")
    p.add_argument("--rule", default="linear_k", choices=["linear_k", "inverse_k", "log_k"],
                   help="budget -> lambda rule (default: linear_k)")
    p.add_argument("--coord", default="index", choices=["index", "sigma"],
                   help="warp coordinate (sigma needs the schedules' sigma grids)")
    p.add_argument("--max-gap", type=int, default=None,
                   help="strict cap on the distance between computed steps (default: the endpoints' largest gap, "
                        "raised with a warning only when the budget needs it)")
    p.add_argument("-o", "--output", default=None, help="write the schedule here instead of printing it")


def _interpolate_run(args: argparse.Namespace) -> int:
    from .schedules.transport import interpolate_many
    if len(args.schedules) < 2:
        raise UsageError("interpolate needs a reference and an anchor schedule file")
    schedules = [schedule_io.load(p) for p in args.schedules]
    result = interpolate_many(schedules, args.budget, num_steps=args.steps, rule=args.rule,
                              coord=args.coord, max_gap=args.max_gap)
    if args.output:
        path = schedule_io.save(result, args.output)
        print(f"{_mask_line(result)}  -> {path}")
    else:
        print(schedule_io.dumps(result))
    return EXIT_OK


# --- show / plot ---------------------------------------------------------------------

def _files_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("schedules", nargs="+", metavar="SCHEDULE.json")


def _mask_line(s: Schedule, width: int | None = None) -> str:
    mask = s.mask_string().ljust(width or s.num_steps)
    return f"{mask}  K={s.budget}/{s.num_steps} {s.speedup:.2f}x  {s.kind}"


def _show_run(args: argparse.Namespace) -> int:
    schedules = [schedule_io.load(p) for p in args.schedules]
    width = max(s.num_steps for s in schedules)
    for path, s in zip(args.schedules, schedules):
        print(f"{_mask_line(s, width)}  {Path(path).name}")
    return EXIT_OK


def _plot_args(p: argparse.ArgumentParser) -> None:
    _files_args(p)
    p.add_argument("-o", "--output", required=True, help="image file to write (png, svg, pdf)")
    p.add_argument("--title", default=None)
    p.add_argument("--no-sigmas", action="store_true", help="leave out the sigma curve")


def _plot_run(args: argparse.Namespace) -> int:
    from .plotting import save_plot
    schedules = [schedule_io.load(p) for p in args.schedules]
    names = [Path(p).stem for p in args.schedules]
    path = save_plot(schedules, args.output, names, args.title, show_sigmas=not args.no_sigmas)
    print(f"wrote {path}")
    return EXIT_OK


register(Command("interpolate", "schedule for any budget between a reference and an anchor",
                 _interpolate_args, _interpolate_run))
register(Command("show", "print schedules as text masks (# computed, . reused)", _files_args, _show_run))
register(Command("plot", "draw schedules to an image file", _plot_args, _plot_run))


# --- entry point ----------------------------------------------------------------------

def build_parser(commands: dict[str, Command] | None = None, prog: str = PROG,
                 description: str = "OTCache schedule engine") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in (COMMANDS if commands is None else commands).values():
        command.add_arguments(sub.add_parser(command.name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None, commands: dict[str, Command] | None = None, prog: str = PROG,
         description: str = "OTCache schedule engine") -> int:
    table = COMMANDS if commands is None else commands
    try:
        args = build_parser(table, prog, description).parse_args(argv)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = table[args.command].run(args)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        return code
    except (OTCacheError, UsageError) as e:
        return _fail(str(e))
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours; silence the final flush too.
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as e:
        return _fail(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_BAD_INPUT
