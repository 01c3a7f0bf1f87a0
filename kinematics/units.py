"""lerobot's normalised joint range and degrees, through the arm's motor calibration.

lerobot >= 0.4 records the joints of its so_follower / koch_follower arms in a normalised range unless the robot
was configured with `use_degrees=True`: arm joints in MotorNormMode.RANGE_M100_100 (-100..100 across the
calibrated range of motion), the gripper in RANGE_0_100. Forward kinematics needs angles, so a normalised value
goes back to encoder ticks through the calibration lerobot wrote for that arm (a JSON file of
`{motor: {id, drive_mode, homing_offset, range_min, range_max}}`) and on to lerobot's own degrees,
`(ticks - mid) * 360 / (resolution - 1)` with `mid` the middle of the calibrated range: the same angle a
`use_degrees=True` recording of that arm holds.

Layer 0: NumPy and the standard library only (never torch or lerobot), so `compare` and `fk` run without them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

# lerobot's MotorNormMode values, and "degrees" for a joint that already is in lerobot's degrees.
RANGE_M100_100, RANGE_0_100, DEGREES = "range_m100_100", "range_0_100", "degrees"
MODES = (RANGE_M100_100, RANGE_0_100, DEGREES)
# The encoders of every arm lerobot calibrates this way (Feetech STS3215, Dynamixel XL430/XL330): 4096 ticks a turn.
DEFAULT_RESOLUTION = 4096
# lerobot's `MotorsBus.apply_drive_mode` per bus (v0.6.1 lerobot/motors/feetech/feetech.py, dynamixel/dynamixel.py):
# Feetech reverses a motor in software (the calibration's drive_mode flips the normalised value); a Dynamixel
# reverses itself in its Drive_Mode register, so the bus leaves the value alone whatever the calibration says.
APPLY_DRIVE_MODE = {"feetech": True, "dynamixel": False}


class CalibrationFileError(ValueError):
    """A motor calibration (file or document) that cannot be used; the message is one line naming its source."""


@dataclass(frozen=True)
class MotorRange:
    """One motor's calibration as lerobot's `MotorCalibration` holds it (raw encoder ticks).

    homing_offset lives in the motor's own register (the ticks it reports are already offset), so the conversions
    below never use it; it is kept so that a document read here can be written back unchanged."""

    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


FIELDS = tuple(field.name for field in fields(MotorRange))


def parse_motor_calibration(document: object, source: str) -> dict[str, MotorRange]:
    """A calibration document (lerobot's JSON, parsed) -> motor name -> MotorRange, checked: a mapping of motors,
    each a mapping with every field an int (not a bool, not a float) and range_min < range_max. Fields lerobot may
    add later are ignored. `source` (a file name) begins every error message."""
    if not isinstance(document, Mapping):
        raise CalibrationFileError(
            f"{source}: a motor calibration must be a JSON object of motors, not {_kind(document)}"
        )
    if not document:
        raise CalibrationFileError(f"{source}: the motor calibration names no motor")
    motors = {}
    for name, entry in document.items():
        if not isinstance(entry, Mapping):
            raise CalibrationFileError(f"{source}: motor {name!r} must be a JSON object of {', '.join(FIELDS)}")
        missing = [key for key in FIELDS if key not in entry]
        if missing:
            raise CalibrationFileError(f"{source}: motor {name!r} lacks {', '.join(missing)}")
        for key in FIELDS:
            value = entry[key]
            # bool is an int subclass, and JSON's true would otherwise pass as 1.
            if isinstance(value, bool) or not isinstance(value, int):
                raise CalibrationFileError(f"{source}: motor {name!r} has {key} {value!r}, not an integer")
        motor = MotorRange(**{key: entry[key] for key in FIELDS})
        if motor.range_min >= motor.range_max:
            raise CalibrationFileError(
                f"{source}: motor {name!r} has range_min {motor.range_min} >= range_max {motor.range_max}"
            )
        motors[str(name)] = motor
    return motors


def read_motor_calibration(path: str | Path) -> dict[str, MotorRange]:
    """lerobot's calibration JSON file (what `Robot._save_calibration` writes) -> motor name -> MotorRange."""
    return parse_motor_calibration(_read_json(Path(path)), str(path))


def read_calibration_document(path: str | Path, names: Sequence[str] = ()) -> dict[str, dict[str, int]]:
    """The checked calibration file as plain JSON values (for an artifact's meta), after checking that each of
    `names` (dataset joint names) finds its motor in it (`motor_ranges`)."""
    motors = read_motor_calibration(path)
    motor_ranges(motors, names, str(path))
    return {name: motor.as_dict() for name, motor in motors.items()}


def motor_ranges(
    calibration: Mapping[str, object], names: Sequence[str], source: str = "robot calibration"
) -> list[MotorRange]:
    """The MotorRange of each dataset joint in `names`, in order. `calibration` is a document (motor name ->
    fields, as in a file or an artifact's meta) or already parsed. A dataset name finds its motor by the same name,
    by that name less lerobot's ".pos" suffix, or by ending in "_<motor>" (a prefixed arm, "left_gripper"),
    the longest such motor first."""
    parsed = {name: entry for name, entry in calibration.items() if isinstance(entry, MotorRange)}
    motors = parsed if parsed and len(parsed) == len(calibration) else parse_motor_calibration(calibration, source)
    ranges = []
    for name in names:
        motor = _motor_for(name, motors)
        if motor is None:
            raise CalibrationFileError(
                f"{source}: no motor for joint {name!r} (the calibration names {', '.join(sorted(motors))})"
            )
        ranges.append(motors[motor])
    return ranges


def _motor_for(name: str, motors: Mapping[str, MotorRange]) -> str | None:
    bare = name.removesuffix(".pos")
    if bare in motors:
        return bare
    suffixed = [motor for motor in motors if bare.endswith("_" + motor)]
    return max(suffixed, key=len) if suffixed else None


def normalized_to_degrees(
    values: np.ndarray,
    modes: Sequence[str],
    calibration: Sequence[MotorRange],
    resolution: int | Sequence[int] = DEFAULT_RESOLUTION,
    apply_drive_mode: bool = True,
) -> np.ndarray:
    """[..., J] joint values in lerobot's normalised ranges -> [..., J] lerobot degrees (float64).

    modes: J of "range_m100_100", "range_0_100" or "degrees" (the value already is lerobot's degrees and passes
    through); calibration: J MotorRange; resolution: encoder ticks a turn (one, or one per joint).
    apply_drive_mode: the bus's `apply_drive_mode` (APPLY_DRIVE_MODE: True for Feetech, False for Dynamixel).

    The same as lerobot's `MotorsBus._unnormalize` of the value followed by `_normalize` in DEGREES mode (source:
    see lerobot v0.6.1 lerobot/motors/motors_bus.py MotorsBus._unnormalize), drive_mode flipping the value and the
    value clipped to its range as there, except that it does not round to an integer tick: `_unnormalize` truncates
    with `int(...)`, and a cross-device comparison measures differences far smaller than a tick (360/4095 deg),
    which rounding would hide or inflate to a whole tick. lerobot's clip turns NaN into the range's minimum; here
    a non-finite value stays non-finite, so that a broken run never reads as a valid angle.
    """
    q = np.asarray(values, dtype=np.float64)
    table = _joint_table(q, modes, calibration, resolution, apply_drive_mode)
    m100, zero100, degrees, flip, low, high, max_res = table
    # Both normalised ranges map linearly onto [range_min, range_max] after drive_mode's flip and the clip; the
    # operations follow lerobot's order so that values on a tick agree to the last bit.
    signed = np.where(flip & m100, -q, np.where(flip & zero100, 100.0 - q, q))
    bounded = np.where(m100, np.clip(signed, -100.0, 100.0), np.clip(signed, 0.0, 100.0))
    span = high - low
    ticks = np.where(m100, ((bounded + 100) / 200) * span + low, (bounded / 100) * span + low)
    middle = (low + high) / 2
    return np.where(degrees, q, (ticks - middle) * 360 / max_res)


def degrees_to_normalized(
    values: np.ndarray,
    modes: Sequence[str],
    calibration: Sequence[MotorRange],
    resolution: int | Sequence[int] = DEFAULT_RESOLUTION,
    apply_drive_mode: bool = True,
) -> np.ndarray:
    """[..., J] lerobot degrees -> [..., J] values in each joint's mode (the inverse of `normalized_to_degrees`,
    for tests and demo data): lerobot's `_unnormalize` in DEGREES mode without its `int(...)`, then `_normalize`
    in the joint's range mode (clipped to the calibrated range, drive_mode applied as there)."""
    q = np.asarray(values, dtype=np.float64)
    m100, zero100, degrees, flip, low, high, max_res = _joint_table(q, modes, calibration, resolution, apply_drive_mode)
    middle = (low + high) / 2
    ticks = np.clip((q * max_res / 360) + middle, low, high)
    fraction = (ticks - low) / (high - low)
    normalized = np.where(m100, fraction * 200 - 100, fraction * 100)
    normalized = np.where(flip & m100, -normalized, np.where(flip & zero100, 100 - normalized, normalized))
    return np.where(degrees, q, normalized)


def _joint_table(
    values: np.ndarray,
    modes: Sequence[str],
    calibration: Sequence[MotorRange],
    resolution: int | Sequence[int],
    apply_drive_mode: bool,
) -> tuple[np.ndarray, ...]:
    """Per-joint [J] arrays: is RANGE_M100_100, is RANGE_0_100, is DEGREES, flipped by drive_mode, range_min,
    range_max, resolution - 1; checked against the values' last axis."""
    width = values.shape[-1] if values.ndim else 0
    if not len(modes) == len(calibration) == width:
        raise ValueError(
            f"{width} joint values need as many modes and motor calibrations, not {len(modes)} and {len(calibration)}"
        )
    # str.lower reads a str enum (lerobot's MotorNormMode) by its value.
    names = [str.lower(mode) for mode in modes]
    unknown = sorted({mode for mode in names if mode not in MODES})
    if unknown:
        raise ValueError(f"unknown joint mode {', '.join(map(repr, unknown))} (one of {', '.join(MODES)})")
    kind = np.array(names)
    max_res = np.broadcast_to(np.asarray(resolution, dtype=np.float64), (width,)) - 1
    if np.any(max_res < 1):
        raise ValueError(f"encoder resolution must be at least 2 ticks a turn, not {resolution}")
    return (
        kind == RANGE_M100_100,
        kind == RANGE_0_100,
        kind == DEGREES,
        np.array([apply_drive_mode and motor.drive_mode != 0 for motor in calibration], dtype=bool),
        np.array([motor.range_min for motor in calibration], dtype=np.float64),
        np.array([motor.range_max for motor in calibration], dtype=np.float64),
        max_res,
    )


def _read_json(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CalibrationFileError(f"{path}: cannot read the motor calibration ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise CalibrationFileError(f"{path}: the motor calibration is not JSON (not UTF-8 text)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CalibrationFileError(
            f"{path}: the motor calibration is not JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None


def _kind(value: object) -> str:
    return {list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)
