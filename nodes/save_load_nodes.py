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

from pathlib import Path

from comfy_api.latest import io

from ..otcache_engine import Schedule, schedule_io  # noqa: F401 - schedule_io: tests reach it through here
from ..otcache_engine.errors import OTCacheError, ScheduleError
from .measure.calibration_data import CALIB_SUFFIX, CalibrationData
from .node_types import CalibrationType, ScheduleType
from .preview import plot_payload, ui_output
from .schedule_folders import (clean_name, inside, load_listed, register_folder, resolve_listed, save_folder,
                             schedule_files)



# --- names and paths ----------------------------------------------------------------------

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
    from .runtime.presets import is_preset, load_preset

    if is_preset(name):
        return load_preset(name), None
    schedule, path = load_listed(name)  # no escape, size cap, strict JSON, schema: one clear sentence
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
        raise ScheduleError(f"file name {name!r} resolves outside models/otcache; refused")
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
        from .runtime.presets import list_presets
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
