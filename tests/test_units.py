"""lerobot's normalised joint range to degrees: against lerobot's own motor buses, and the calibration file's checks.

The buses are lerobot's real FeetechMotorsBus (so_follower) and DynamixelMotorsBus (koch_follower), built with
motors and a calibration and never connected: their constructors only name the port (the serial port opens in
`connect()`). They need the motor SDKs of lerobot's `feetech` / `dynamixel` extras, and skip without them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from verify_ate.kinematics.units import (
    APPLY_DRIVE_MODE,
    DEGREES,
    RANGE_0_100,
    RANGE_M100_100,
    CalibrationFileError,
    MotorRange,
    degrees_to_normalized,
    motor_ranges,
    normalized_to_degrees,
    read_calibration_document,
    read_motor_calibration,
)

TICK_DEG = 360 / 4095
NOT_OPENED = "/dev/null-not-opened"
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
MODES = (RANGE_M100_100,) * 5 + (RANGE_0_100,)
# A calibration as lerobot's so_follower / koch_follower calibrate() writes one, with two motors reversed
# (drive_mode 1) so that the flip is exercised on an arm joint and on the gripper.
CALIBRATION = {
    "shoulder_pan": MotorRange(1, 0, -1187, 762, 3312),
    "shoulder_lift": MotorRange(2, 1, 1005, 862, 3160),
    "elbow_flex": MotorRange(3, 0, -934, 894, 3095),
    "wrist_flex": MotorRange(4, 0, 1229, 835, 3217),
    "wrist_roll": MotorRange(5, 0, -1998, 0, 4095),
    "gripper": MotorRange(6, 1, 1330, 2032, 3524),
}
RANGES = [CALIBRATION[name] for name in JOINTS]
FEETECH_MODELS = ("sts3215",) * 6
DYNAMIXEL_MODELS = ("xl430-w250", "xl430-w250", "xl330-m288", "xl330-m288", "xl330-m288", "xl330-m288")
SDKS = {"feetech": ("scservo_sdk", "feetech"), "dynamixel": ("dynamixel_sdk", "dynamixel")}


def lerobot_buses(kind: str, models: tuple[str, ...]):
    """Two unconnected lerobot buses over the same motors and calibration: one recording in the normalised modes
    (MODES), one in DEGREES (what `use_degrees=True` records)."""
    pytest.importorskip("lerobot")
    module, extra = SDKS[kind]
    for name in (module, "serial", "deepdiff"):
        pytest.importorskip(name, reason=f"lerobot's {kind} bus needs lerobot[{extra}] ({name} is not installed)")
    from lerobot.motors import Motor, MotorCalibration, MotorNormMode

    if kind == "feetech":
        from lerobot.motors.feetech import FeetechMotorsBus as Bus
    else:
        from lerobot.motors.dynamixel import DynamixelMotorsBus as Bus
    calibration = {name: MotorCalibration(**CALIBRATION[name].as_dict()) for name in JOINTS}

    def bus(modes):
        motors = {
            name: Motor(CALIBRATION[name].id, model, MotorNormMode(mode))
            for name, model, mode in zip(JOINTS, models, modes, strict=True)
        }
        return Bus(NOT_OPENED, motors, calibration)

    normalized, degrees = bus(MODES), bus((DEGREES,) * len(JOINTS))
    assert not normalized.is_connected  # built, never opened
    return normalized, degrees


def lerobot_degrees(normalized_bus, degrees_bus, values: np.ndarray) -> np.ndarray:
    """[R, J] normalised -> [R, J] degrees the way a lerobot robot's values travel: `_unnormalize` to integer
    ticks (what the bus writes), then `_normalize` of those ticks in DEGREES mode."""
    out = np.empty_like(values)
    for row, vector in enumerate(values):
        ticks = normalized_bus._unnormalize(
            {CALIBRATION[name].id: float(v) for name, v in zip(JOINTS, vector, strict=True)}
        )
        degrees = degrees_bus._normalize(ticks)
        out[row] = [degrees[CALIBRATION[name].id] for name in JOINTS]
    return out


def random_normalized(rng: np.random.Generator, rows: int) -> np.ndarray:
    """[rows, 6]: arm joints over -100..100 and the gripper over 0..100, a few a little outside (lerobot clips)."""
    arm = rng.uniform(-104, 104, size=(rows, 5))
    gripper = rng.uniform(-3, 103, size=(rows, 1))
    return np.concatenate([arm, gripper], axis=1)


def resolutions(bus) -> list[int]:
    return [bus.model_resolution_table[bus.motors[name].model] for name in JOINTS]


@pytest.mark.parametrize(("kind", "models"), [("feetech", FEETECH_MODELS), ("dynamixel", DYNAMIXEL_MODELS)])
def test_degrees_match_lerobot_within_one_tick(rng, kind, models):
    normalized_bus, degrees_bus = lerobot_buses(kind, models)
    assert type(normalized_bus).apply_drive_mode is APPLY_DRIVE_MODE[kind]
    values = random_normalized(rng, 3000)
    theirs = lerobot_degrees(normalized_bus, degrees_bus, values)
    ours = normalized_to_degrees(values, MODES, RANGES, resolutions(normalized_bus), APPLY_DRIVE_MODE[kind])
    # lerobot truncates the tick (int() of a positive tick count), and degrees grow with ticks, so ours lies at or
    # above lerobot's, by less than one tick; on the whole the difference is not zero (no rounding here).
    difference = ours - theirs
    assert difference.min() >= 0
    assert difference.max() < TICK_DEG
    assert np.mean(difference > 1e-9) > 0.9


@pytest.mark.parametrize(("kind", "models"), [("feetech", FEETECH_MODELS), ("dynamixel", DYNAMIXEL_MODELS)])
def test_degrees_exact_on_whole_ticks(kind, models):
    """On whole ticks lerobot's own `_normalize` gives both the normalised value and the degrees, without
    rounding anywhere: ours turns the one into the other exactly (to float64), and back."""
    normalized_bus, degrees_bus = lerobot_buses(kind, models)
    ticks = np.linspace([m.range_min for m in RANGES], [m.range_max for m in RANGES], 401).round().astype(int)
    ids = [CALIBRATION[name].id for name in JOINTS]
    normalized = np.array(
        [list(normalized_bus._normalize(dict(zip(ids, map(int, row), strict=True))).values()) for row in ticks]
    )
    degrees = np.array(
        [list(degrees_bus._normalize(dict(zip(ids, map(int, row), strict=True))).values()) for row in ticks]
    )
    drive = APPLY_DRIVE_MODE[kind]
    res = resolutions(normalized_bus)
    np.testing.assert_allclose(normalized_to_degrees(normalized, MODES, RANGES, res, drive), degrees, rtol=0, atol=1e-9)
    np.testing.assert_allclose(degrees_to_normalized(degrees, MODES, RANGES, res, drive), normalized, rtol=0, atol=1e-9)


def test_drive_mode_flips_as_lerobot_feetech_does():
    """Feetech flips a reversed motor's value in software (apply_drive_mode True): -100..100 negated, 0..100 as
    100 - value. A Dynamixel reverses itself, so its bus (apply_drive_mode False) leaves the value as it is."""
    pytest.importorskip("lerobot")
    from lerobot.motors.dynamixel import DynamixelMotorsBus
    from lerobot.motors.feetech import FeetechMotorsBus

    assert FeetechMotorsBus.apply_drive_mode is True
    assert DynamixelMotorsBus.apply_drive_mode is False
    forward = MotorRange(1, 0, 0, 1000, 3000)
    reversed_ = MotorRange(1, 1, 0, 1000, 3000)
    values = np.array([[50.0, 25.0]])
    # 50 of -100..100 over ticks 1000..3000 is tick 2500, 500 ticks above the middle; 25 of 0..100 is tick 1500.
    expected = np.array([[500 * 360 / 4095, -500 * 360 / 4095]])
    modes = (RANGE_M100_100, RANGE_0_100)
    np.testing.assert_allclose(normalized_to_degrees(values, modes, [forward, forward]), expected, rtol=1e-15)
    np.testing.assert_allclose(normalized_to_degrees(values, modes, [reversed_, reversed_]), -expected, rtol=1e-15)
    unflipped = normalized_to_degrees(values, modes, [reversed_, reversed_], apply_drive_mode=False)
    np.testing.assert_allclose(unflipped, expected, rtol=1e-15)


def test_continuous_formula_between_ticks():
    """Values between ticks keep their fraction: degrees = value / 200 * (max - min) * 360 / (resolution - 1)."""
    motor = MotorRange(1, 0, 0, 1000, 3000)
    values = np.linspace(-100, 100, 10001)[:, None]
    expected = values / 200 * 2000 * 360 / 4095
    np.testing.assert_allclose(normalized_to_degrees(values, [RANGE_M100_100], [motor]), expected, rtol=0, atol=1e-12)
    gripper = np.linspace(0, 100, 1001)[:, None]
    expected = (gripper - 50) / 100 * 2000 * 360 / 4095
    np.testing.assert_allclose(normalized_to_degrees(gripper, [RANGE_0_100], [motor]), expected, rtol=0, atol=1e-12)


def test_round_trip_any_leading_shape_and_degrees_pass_through(rng):
    values = random_normalized(rng, 60).clip([-100] * 5 + [0], 100).reshape(3, 20, 6)
    degrees = normalized_to_degrees(values, MODES, RANGES)
    assert degrees.shape == (3, 20, 6)
    np.testing.assert_allclose(degrees_to_normalized(degrees, MODES, RANGES), values, rtol=0, atol=1e-10)
    mixed = (*MODES[:5], DEGREES)
    np.testing.assert_array_equal(normalized_to_degrees(values, mixed, RANGES)[..., 5], values[..., 5])


def test_out_of_range_values_clip_as_lerobot_but_nan_stays_nan():
    motor = MotorRange(1, 0, 0, 1000, 3000)
    values = np.array([[150.0], [-150.0], [math.nan], [math.inf]])
    degrees = normalized_to_degrees(values, [RANGE_M100_100], [motor])
    np.testing.assert_allclose(degrees[:2, 0], [1000 * 360 / 4095, -1000 * 360 / 4095])
    assert np.isnan(degrees[2, 0])
    # inf clips like any value past the range (lerobot's min/max does the same); only NaN has no place.
    assert degrees[3, 0] == pytest.approx(1000 * 360 / 4095)


def test_modes_and_widths_are_checked():
    motor = MotorRange(1, 0, 0, 1000, 3000)
    with pytest.raises(ValueError, match="unknown joint mode 'radians'"):
        normalized_to_degrees(np.zeros((2, 1)), ["radians"], [motor])
    with pytest.raises(ValueError, match="2 joint values need as many modes"):
        normalized_to_degrees(np.zeros((4, 2)), [RANGE_M100_100], [motor])


def test_reads_the_file_lerobot_writes(tmp_path):
    """lerobot's Robot._save_calibration: draccus dumps dict[str, MotorCalibration] as JSON."""
    pytest.importorskip("lerobot")
    import draccus
    from lerobot.motors import MotorCalibration

    path = tmp_path / "my_arm.json"
    with open(path, "w") as file, draccus.config_type("json"):
        draccus.dump({name: MotorCalibration(**CALIBRATION[name].as_dict()) for name in JOINTS}, file, indent=4)
    assert read_motor_calibration(path) == CALIBRATION
    document = read_calibration_document(path, JOINTS)
    assert document == json.loads(path.read_text())
    assert motor_ranges(document, JOINTS) == RANGES


def test_joint_names_find_their_motors():
    document = {name: motor.as_dict() for name, motor in CALIBRATION.items()}
    found = motor_ranges(document, ["left_gripper", "wrist_flex.pos", "main_shoulder_pan"])
    assert found == [CALIBRATION["gripper"], CALIBRATION["wrist_flex"], CALIBRATION["shoulder_pan"]]
    with pytest.raises(CalibrationFileError, match="arm.json: no motor for joint 'elbow'"):
        motor_ranges(document, ["elbow"], "arm.json")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "follower_arm.json"
    path.write_text(text)
    return path


def _document(**changes) -> dict:
    document = {name: motor.as_dict() for name, motor in CALIBRATION.items()}
    document["elbow_flex"].update(changes)
    return document


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            json.dumps(_document(range_min=3000, range_max=1000)),
            "motor 'elbow_flex' has range_min 3000 >= range_max 1000",
        ),
        (
            json.dumps(_document(range_min=2000, range_max=2000)),
            "motor 'elbow_flex' has range_min 2000 >= range_max 2000",
        ),
        (
            json.dumps({"elbow_flex": {"id": 3, "drive_mode": 0, "range_min": 1, "range_max": 2}}),
            "motor 'elbow_flex' lacks homing_offset",
        ),
        (json.dumps(_document(range_max=3095.5)), "motor 'elbow_flex' has range_max 3095.5, not an integer"),
        (json.dumps(_document(drive_mode="0")), "motor 'elbow_flex' has drive_mode '0', not an integer"),
        (json.dumps(_document(drive_mode=True)), "motor 'elbow_flex' has drive_mode True, not an integer"),
        (json.dumps({"elbow_flex": [3, 0, 0, 1, 2]}), "motor 'elbow_flex' must be a JSON object"),
        (json.dumps([1, 2, 3]), "must be a JSON object of motors, not a list"),
        ("{}", "names no motor"),
        (
            '{"elbow_flex": {"id": 3,\n  "drive_mode": 0,,}',
            "not JSON (Expecting property name enclosed in double quotes at line 2",
        ),
        ("", "not JSON (Expecting value at line 1 column 1)"),
    ],
)
def test_calibration_file_errors_are_one_line_naming_the_file(tmp_path, text, problem):
    path = _write(tmp_path, text)
    with pytest.raises(CalibrationFileError) as raised:
        read_motor_calibration(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert isinstance(raised.value, ValueError)


def test_missing_calibration_file_is_one_line(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(CalibrationFileError, match="absent.json: cannot read the motor calibration") as raised:
        read_motor_calibration(path)
    assert "\n" not in str(raised.value)


def test_calibration_document_lacking_a_dataset_joint(tmp_path):
    path = _write(tmp_path, json.dumps({name: CALIBRATION[name].as_dict() for name in JOINTS[:-1]}))
    with pytest.raises(CalibrationFileError, match=r"follower_arm.json: no motor for joint 'gripper'"):
        read_calibration_document(path, JOINTS)
