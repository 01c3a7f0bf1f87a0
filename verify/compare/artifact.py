"""Trajectory artifacts: the action chunks one side produced, with where they came from.

`.npz` (readable with allow_pickle=False): `actions` [N, T, J] float32/float64 in dataset units and
`meta`, a 0-d string array of JSON (docs/files.md). A bare `.npy` [T, J] or
[N, T, J] is accepted too ("bring your own"), with its units given by the caller.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verify_ate.reports.atomic import atomic_path
from verify_ate.verify.errors import InputError

SCHEMA = "verify-ate/trajectory/v1"
REQUIRED_META = (
    "schema",
    "robot",
    "joint_names",
    "units",
    "device",
    "dtype",
    "noise_sha256",
    "observation_sha256",
    "checkpoint_sha256",
    "versions",
)
# deg / rad: joint angles; normalized: lerobot's -100..100 range (meta robot_calibration turns it into angles);
# pose: end-effector actions (metres and radians as the robot's layout says).
ARTIFACT_UNITS = ("deg", "rad", "normalized", "pose")
# The inputs a run hashes into its meta, and what each is called in messages.
INPUT_HASHES = {"checkpoint_sha256": "checkpoint", "observation_sha256": "observation", "noise_sha256": "noise"}


@dataclass
class TrajectoryArtifact:
    actions: np.ndarray  # [N, T, J]
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def label(self) -> str:
        return str(self.path) if self.path else str(self.meta.get("device", "trajectory"))


def save_artifact(artifact: TrajectoryArtifact, path: str | Path) -> Path:
    missing = [key for key in REQUIRED_META if key not in artifact.meta]
    if missing:
        raise ValueError(f"artifact meta lacks {missing}")
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"{path}: trajectory artifacts are .npz files")
    return write_npz(path, {"actions": artifact.actions}, json.dumps(artifact.meta, sort_keys=True))


def write_npz(path: Path, arrays: dict[str, np.ndarray], meta: str, compressed: bool = False) -> Path:
    """`arrays` and the JSON text `meta` (a 0-d string array) as one .npz, whole or not at all."""
    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buffer, **arrays, meta=np.array(meta))  # type: ignore[arg-type]
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return path


def read_npz(path: Path, names: Sequence[str], what: str) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays `names` and the JSON object `meta` of an .npz the tool writes (a zip archive: the caller checks),
    never unpickling anything; InputError naming the file and what is wrong with it."""
    wanted = [*names, "meta"]
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = set(archive.files)
            if not set(wanted) <= found:
                quoted = [f"'{name}'" for name in wanted]
                listed = f"{', '.join(quoted[:-1])} and {quoted[-1]}"
                raise InputError(f"{path}: {what} needs arrays {listed}, found {sorted(found) or 'none'}")
            arrays = {name: archive[name] for name in names}
            meta_array = archive["meta"]
    except InputError:
        raise
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise InputError(f"{path}: holds pickled objects, which are never loaded (save plain arrays)") from None
        raise InputError(f"{path}: unreadable npz ({error})") from None
    except Exception as error:  # zip and npy readers raise many types for damaged bytes (even "encrypted")
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{path}: unreadable npz ({type(error).__name__}: {first})") from None
    if meta_array.ndim != 0 or meta_array.dtype.kind not in "US":
        raise InputError(f"{path}: 'meta' must be a 0-d string array of JSON")
    try:
        meta = json.loads(str(meta_array))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: 'meta' is not JSON ({error})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: 'meta' must be a JSON object, not {type(meta).__name__}")
    return arrays, meta


def load_artifact(
    path: str | Path,
    units: str | None = None,
    robot_name: str | None = None,
    joint_names: Sequence[str] | None = None,
) -> TrajectoryArtifact:
    """Load and validate one side. `units`, `robot_name` and `joint_names` describe a bare .npy."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.suffix.lower() == ".npy":
        return _load_bare_npy(path, units, robot_name, joint_names)
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not an .npz trajectory artifact (not a zip archive); a bare array must end in .npy")
    arrays, meta = read_npz(path, ("actions",), "artifact")
    actions = arrays["actions"]
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise InputError(f"{path}: meta lacks {', '.join(missing)}")
    names = meta["joint_names"]
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InputError(f"{path}: meta joint_names must be a list of names")
    for key in ("robot", *INPUT_HASHES):
        if meta[key] is not None and not isinstance(meta[key], str):
            raise InputError(f"{path}: meta {key} must be text, not {type(meta[key]).__name__}")
    if meta["schema"] != SCHEMA:
        raise InputError(f"{path}: schema {meta['schema']!r} is not {SCHEMA!r}")
    if meta["units"] not in ARTIFACT_UNITS:
        raise InputError(f"{path}: units {meta['units']!r} must be one of {', '.join(ARTIFACT_UNITS)}")
    if meta.get("robot_calibration") is not None and not isinstance(meta["robot_calibration"], dict):
        raise InputError(f"{path}: meta robot_calibration must be a JSON object of motors")
    if units and units != meta["units"]:
        raise InputError(f"{path}: units {units!r} were given, the artifact says {meta['units']!r}")
    return TrajectoryArtifact(_validated_actions(actions, path, len(meta["joint_names"])), meta, path)


def _load_bare_npy(
    path: Path, units: str | None, robot_name: str | None, joint_names: Sequence[str] | None
) -> TrajectoryArtifact:
    if units not in ARTIFACT_UNITS:
        raise InputError(f"{path}: a bare .npy has no units of its own; give them (--units deg or rad)")
    try:
        actions = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises many types for damaged bytes
        if "pickle" in str(error).lower():
            raise InputError(f"{path}: holds pickled objects, which are never loaded (save a plain array)") from None
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{path}: not a readable .npy array ({first})") from None
    if not isinstance(actions, np.ndarray):
        actions.close()
        raise InputError(f"{path}: holds an .npz archive, not one .npy array (rename it to .npz)")
    if actions.ndim == 2:
        actions = actions[None]
    names = list(joint_names or [])
    meta: dict[str, Any] = {
        "schema": SCHEMA,
        "robot": robot_name,
        "joint_names": names,
        "units": units,
        "device": "unknown (bare .npy)",
        "dtype": str(actions.dtype),
        "noise_sha256": None,
        "observation_sha256": None,
        "checkpoint_sha256": None,
        "versions": {},
        "source": "bring-your-own .npy",
    }
    return TrajectoryArtifact(_validated_actions(actions, path, len(names) or None), meta, path)


def _validated_actions(actions: np.ndarray, path: Path, n_joints: int | None) -> np.ndarray:
    if actions.dtype not in (np.float32, np.float64):
        raise InputError(f"{path}: actions are {actions.dtype}, expected float32 or float64")
    if actions.ndim != 3:
        raise InputError(f"{path}: actions must be [T, J] or [N, T, J], got shape {list(actions.shape)}")
    if 0 in actions.shape:
        raise InputError(f"{path}: actions are empty, shape {list(actions.shape)}")
    if n_joints is not None and actions.shape[-1] != n_joints:
        raise InputError(f"{path}: actions have {actions.shape[-1]} joints, expected {n_joints}")
    return actions
