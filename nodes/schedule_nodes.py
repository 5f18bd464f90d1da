"""OTCache Save Schedule / OTCache Load Schedule: schedules as shareable files in ``models/otcache``.

Schedules are small JSON files (``otcache_engine.schedule_io``: versioned, validated
strictly, size-capped); calibration data goes next to them as
``<name>.calib.safetensors``. Nothing is ever pickled.

The folder is registered with ComfyUI's ``folder_paths`` under the name ``otcache``
(so ``extra_model_paths.yaml`` can add more folders) and filtered to ``.json``.
Names typed by a user are plain file names: separators, ``..``, absolute paths
and hidden names are refused, and every resolved path is checked to stay inside a
registered folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from comfy_api.latest import io

from ..otcache_engine import Schedule, schedule_io
from ..otcache_engine.errors import OTCacheError, ScheduleError
from .calibration_data import CALIB_SUFFIX, CalibrationData
from .preview import plot_payload, ui_output

FOLDER = "otcache"
EXTENSIONS = {".json"}
NAME_MAX = 100
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$")

ScheduleType = io.Custom("OTCACHE_SCHEDULE")
CalibrationType = io.Custom("OTCACHE_CALIBRATION")


# --- the folder ------------------------------------------------------------------------

def register_folder() -> list[str]:
    """Register ``models/otcache`` (idempotent) and keep only .json files in its listing."""
    import folder_paths

    default = os.path.join(folder_paths.models_dir, FOLDER)
    folder_paths.add_model_folder_path(FOLDER, default, is_default=True)
    paths, _ = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))
    return list(paths)


def save_folder() -> Path:
    """The first registered folder: where new files are written."""
    folder = Path(register_folder()[0])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def schedule_files() -> list[str]:
    import folder_paths
    register_folder()
    return sorted(f for f in folder_paths.get_filename_list(FOLDER) if f.lower().endswith(".json"))


# --- names and paths ----------------------------------------------------------------------

def clean_name(name: str, suffix: str = ".json") -> str:
    """A user-typed file name made safe, with ``suffix``; ScheduleError with the reason otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError("the file name is empty; type a name such as 'flux-28steps-reference'")
    name = name.strip()
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ScheduleError(f"file name {name!r} must not contain '/' or '\\' (no folders, no paths)")
    if name.startswith(".") or ".." in name:
        raise ScheduleError(f"file name {name!r} must not start with '.' or contain '..'")
    if name.lower().endswith(suffix):
        name = name[: -len(suffix)]
    if not name or len(name) > NAME_MAX or not _NAME_OK.match(name):
        raise ScheduleError(f"file name {name!r} may use letters, digits, space, '_', '-', '+' and '.' "
                            f"(at most {NAME_MAX} characters, starting with a letter or digit)")
    return name + suffix


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
    import folder_paths

    folders = register_folder()
    if not isinstance(name, str) or not name or os.path.isabs(name) or name.startswith(("/", "\\")):
        raise ScheduleError(f"schedule {name!r}: expected a file name from the list, not a path")
    parts = re.split(r"[\\/]+", name)
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ScheduleError(f"schedule {name!r}: '..', '.' and hidden names are not allowed")
    if not name.lower().endswith(".json"):
        raise ScheduleError(f"schedule {name!r}: only .json schedule files can be loaded")
    full = folder_paths.get_full_path(FOLDER, name)
    if full is None:
        raise ScheduleError(f"no schedule named {name!r} in models/otcache (refresh the node list with 'R')")
    if not inside(Path(full), folders):
        raise ScheduleError(f"schedule {name!r} resolves outside the otcache folders; refused")
    return Path(full)


def unique_path(folder: Path, filename: str, overwrite: bool) -> Path:
    """``folder/filename``, or with ``-001``, ``-002``... appended when it exists and ``overwrite`` is off."""
    path = folder / filename
    if overwrite or not path.exists():
        return path
    stem = filename[: -len(".json")]
    for k in range(1, 1000):
        candidate = folder / f"{stem}-{k:03d}.json"
        if not candidate.exists():
            return candidate
    raise ScheduleError(f"too many files named {stem}-NNN.json; choose another name or enable overwrite")


def calibration_path(schedule_path: Path) -> Path:
    return schedule_path.with_name(schedule_path.name[: -len(".json")] + CALIB_SUFFIX)


# --- load / save as plain functions (tests and other nodes use them) ---------------------------

def load_schedule(name: str) -> tuple[Schedule, CalibrationData | None]:
    """A preset (``preset:...``) or a listed file, validated; its calibration file when one sits next to it."""
    from .presets import is_preset, load_preset

    if is_preset(name):
        return load_preset(name), None
    path = resolve_listed(name)
    schedule = schedule_io.load(path)  # size cap, strict JSON, schema: one clear sentence on failure
    calib_file = calibration_path(path)
    calib = CalibrationData.load(calib_file) if calib_file.is_file() and inside(calib_file, register_folder()) \
        else None
    return schedule, calib


def save_schedule(schedule: Schedule, name: str, overwrite: bool = False,
                  calibration: CalibrationData | None = None) -> Path:
    """Write ``schedule`` (and its calibration) into the otcache folder; returns the schedule file."""
    if not isinstance(schedule, Schedule):
        raise ScheduleError(f"expected an OTCACHE_SCHEDULE, got {type(schedule).__name__}")
    folder = save_folder()
    path = unique_path(folder, clean_name(name), overwrite)
    if not inside(path, [str(folder)]):
        raise ScheduleError(f"file name {name!r} resolves outside {folder}; refused")
    schedule_io.save(schedule, path)
    if calibration is not None:
        calibration.save(calibration_path(path))
    return path


# --- nodes --------------------------------------------------------------------------------

class SaveSchedule(io.ComfyNode):
    """Write a schedule (and optionally its calibration) to models/otcache for reuse and sharing."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheSaveSchedule",
            display_name="OTCache Save Schedule",
            category="OTCache",
            description="Saves a schedule as JSON in models/otcache (and the calibration data as "
                        ".calib.safetensors next to it) so it appears in OTCache Load Schedule and can be shared.",
            inputs=[
                ScheduleType.Input("schedule", tooltip="The schedule to save (reference, anchor or any other)."),
                io.String.Input("filename", default="otcache-schedule",
                                tooltip="A plain file name (no folders); '.json' is added. Letters, digits, "
                                        "space, '_', '-', '+', '.'."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing file of that name. Off: a -001, -002... suffix is added."),
                CalibrationType.Input("calibration", optional=True,
                                      tooltip="Calibration data from OTCache Calibrate, saved as "
                                              "<name>.calib.safetensors (never pickle)."),
            ],
            outputs=[ScheduleType.Output("saved_schedule", display_name="schedule")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, schedule: Schedule, filename: str, overwrite: bool = False,
                calibration: CalibrationData | None = None) -> io.NodeOutput:
        try:
            path = save_schedule(schedule, filename, overwrite, calibration)
        except OTCacheError as e:
            raise ValueError(f"OTCache Save Schedule: {e}") from None
        payload = plot_payload(schedule, label=schedule.kind, note=f"saved as {path.name}")
        ui = ui_output(payload)
        ui["otcache_saved"] = [path.name]
        return io.NodeOutput(schedule, ui=ui)


class LoadSchedule(io.ComfyNode):
    """Load a saved schedule (or a shipped preset) from models/otcache."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        from .presets import list_presets
        try:
            files = schedule_files()
        except Exception:  # noqa: BLE001 - a missing folder must not hide the node
            files = []
        options = files + list_presets() or ["(no schedules yet)"]
        return io.Schema(
            node_id="OTCacheLoadSchedule",
            display_name="OTCache Load Schedule",
            category="OTCache",
            description="Loads a schedule saved by OTCache Save Schedule (models/otcache/*.json) or a shipped "
                        "preset, validated; outputs its calibration data too when a .calib.safetensors file "
                        "sits next to it.",
            inputs=[io.Combo.Input("schedule_name", options=options,
                                   tooltip="Files in models/otcache (press R to refresh) and presets.")],
            outputs=[ScheduleType.Output("schedule", display_name="schedule"),
                     CalibrationType.Output("calibration", display_name="calibration",
                                            tooltip="The saved calibration, or nothing when none was saved.")],
        )

    @classmethod
    def execute(cls, schedule_name: str) -> io.NodeOutput:
        try:
            schedule, calib = load_schedule(schedule_name)
        except OTCacheError as e:
            raise ValueError(f"OTCache Load Schedule: {e}") from None
        payload = plot_payload(schedule, label=schedule.kind, note=f"loaded {schedule_name}")
        return io.NodeOutput(schedule, calib, ui=ui_output(payload))

    @classmethod
    def fingerprint_inputs(cls, schedule_name: str) -> str:
        """Re-run when the file changes on disk (ComfyUI would otherwise serve the cached value)."""
        try:
            path = resolve_listed(schedule_name)
            calib = calibration_path(path)
            stamp = f"{path.stat().st_mtime_ns}:{calib.stat().st_mtime_ns if calib.exists() else 0}"
            return f"{schedule_name}:{stamp}"
        except Exception:  # noqa: BLE001 - presets and missing files: the name alone
            return str(schedule_name)


try:  # register at import so the server route and the dropdown see the folder from the start
    register_folder()
except Exception:  # noqa: BLE001 - outside ComfyUI there is no folder_paths
    pass

NODES = [SaveSchedule, LoadSchedule]
