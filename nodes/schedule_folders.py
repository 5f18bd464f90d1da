"""The pack's folders and the names in them: one resolver for Load Schedule, Save Schedule and the preview route.

Schedules live in ComfyUI's ``models/otcache`` (registered with ``folder_paths`` as ``otcache``, so
``extra_model_paths.yaml`` can add folders); studies in ``user/otcache``. Anything in those folders may have
been put there by someone else (a shared models folder, an unpacked archive), so a name is resolved the same
way wherever it comes from (a dropdown, a typed file name, a request body):

- plain names only: no separators, no ``..``, no hidden names, ``.json`` for schedules;
- the file must lie inside a registered folder once every symbolic link is resolved, and is read without
  following a link at its own name (``safe_files.read_bounded``);
- messages name the file as the user wrote it, never an absolute server path.

Nothing here imports ComfyUI at module level (``folder_paths`` is looked up when needed), so the server route
can use it without the node classes.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..otcache_engine import Schedule, schedule_io
from ..otcache_engine.errors import ScheduleError

FOLDER = "otcache"
EXTENSIONS = {".json"}
NAME_MAX = 100
MAX_NAME = 512                           # longest name (with folders) a request may carry
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$")


# --- the folders ------------------------------------------------------------------------------

def _folder_paths():
    try:
        import folder_paths  # ComfyUI's; only present inside a server
    except ImportError:
        raise ScheduleError("saved schedules can only be looked up inside ComfyUI") from None
    return folder_paths


def register_folder() -> list[str]:
    """Register ``models/otcache`` (idempotent) and keep only .json files in its listing."""
    fp = _folder_paths()
    default = os.path.join(fp.models_dir, FOLDER)
    fp.add_model_folder_path(FOLDER, default, is_default=True)
    paths, _ = fp.folder_names_and_paths[FOLDER]
    fp.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))
    return list(paths)


def save_folder() -> Path:
    """The first registered folder: where new files are written."""
    folder = Path(register_folder()[0])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def user_folder() -> Path:
    """``<ComfyUI user directory>/otcache``, where studies live (created when missing)."""
    folder = Path(_folder_paths().get_user_directory()) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def schedule_files() -> list[str]:
    fp = _folder_paths()
    register_folder()
    return sorted(f for f in fp.get_filename_list(FOLDER) if f.lower().endswith(".json"))


# --- names ------------------------------------------------------------------------------------

def plain_name(name: str) -> str:
    """``name`` stripped, when it is a plain file name (no folders, not hidden, safe characters)."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError("the file name is empty; type a name such as 'flux-28steps-reference'")
    name = name.strip()
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ScheduleError(f"file name {name[:NAME_MAX]!r} must not contain '/' or '\\' (no folders, no paths)")
    if name.startswith(".") or ".." in name:
        raise ScheduleError(f"file name {name[:NAME_MAX]!r} must not start with '.' or contain '..'")
    if len(name) > NAME_MAX or not _NAME_OK.match(name):
        raise ScheduleError(f"file name {name[:NAME_MAX]!r} may use letters, digits, space, '_', '-', '+' and '.' "
                            f"(at most {NAME_MAX} characters, starting with a letter or digit)")
    return name


def clean_name(name: str, suffix: str = ".json") -> str:
    """A user-typed file name made safe, with ``suffix``; ScheduleError with the reason otherwise."""
    stem = name.strip() if isinstance(name, str) else name
    if isinstance(stem, str) and suffix and stem.lower().endswith(suffix):
        stem = stem[: -len(suffix)]
    return plain_name(stem) + suffix


def inside(path: Path, folders: list[str]) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside one of ``folders``."""
    real = os.path.realpath(path)
    for folder in folders:
        root = os.path.realpath(folder)
        try:
            if os.path.commonpath([real, root]) == root:
                return True
        except ValueError:  # other drive on Windows
            continue
    return False


def resolve_listed(name: str) -> Path:
    """The file behind a dropdown entry (relative to a registered folder), refusing any escape."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or os.path.isabs(name) or name.startswith(("/", "\\")):
        raise ScheduleError(f"schedule {str(name)[:80]!r}: expected a file name from the list, not a path")
    parts = re.split(r"[\\/]+", name)
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ScheduleError(f"schedule {name!r}: '..', '.' and hidden names are not allowed")
    if not name.lower().endswith(".json"):
        raise ScheduleError(f"schedule {name!r}: only .json schedule files can be loaded")
    try:
        folders = register_folder()
    except ScheduleError as e:
        raise ScheduleError(f"schedule {name!r}: {e}") from None
    full = _folder_paths().get_full_path(FOLDER, name)
    if full is None:
        raise ScheduleError(f"no schedule named {name!r} in models/otcache (refresh the node list with 'R')")
    if not inside(Path(full), folders):
        raise ScheduleError(f"schedule {name!r} resolves outside the otcache folders; refused")
    return Path(os.path.realpath(full))


def load_listed(name: str) -> tuple[Schedule, Path]:
    """A listed schedule file, validated, and where it is; messages name it by ``name`` only."""
    path = resolve_listed(name)
    return schedule_io.load(path, source=f"schedule {name!r}"), path
