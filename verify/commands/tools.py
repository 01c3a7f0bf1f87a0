"""The commands that need no model: `compare` two artifacts, `noise` files, `fk` of a joint log.

None of them imports torch or lerobot (a CI gate job installs neither).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from verify_ate.kinematics import RobotModel
from verify_ate.verify.compare.gate import GateConfig
from verify_ate.verify.errors import EXIT_GATE_FAILED, EXIT_PASS, InputError
from verify_ate.verify.publish import OutputPaths, publish


def compare_artifacts(artifacts: Any, robot: RobotModel, gate: GateConfig, outputs: OutputPaths) -> int:
    """Gate two trajectory artifacts (or bare .npy arrays in their units); returns the exit code.

    artifacts: the two paths, the units of bare arrays, and the inputs allowed to differ
    (verify_ate.verify.cli.args.ComparedArtifacts)."""
    from verify_ate.verify.compare.artifact import load_artifact
    from verify_ate.verify.compare.comparator import compare

    names = robot.dataset_joint_names
    reference_artifact = load_artifact(artifacts.reference, artifacts.units, robot.name, names)
    under_test_artifact = load_artifact(artifacts.under_test, artifacts.units, robot.name, names)
    result = compare(reference_artifact, under_test_artifact, robot, gate, accept=artifacts.accept)
    publish(result, outputs)
    return EXIT_PASS if result.passed else EXIT_GATE_FAILED


def make_noise_file(seed: int, shape: tuple[int, ...], out: Path) -> int:
    from verify_ate.noise import make_noise, save_noise

    noise = make_noise(seed, shape)
    save_noise(noise, out)
    print(f"wrote {out}: shape {list(noise.shape)} seed {noise.seed} sha256 {noise.sha256}")
    return EXIT_PASS


def show_noise_file(path: Path) -> int:
    from verify_ate.noise import load_noise

    print(json.dumps(load_noise(path).summary(), indent=2))
    return EXIT_PASS


def import_noise_file(source: Path, out: Path) -> int:
    from verify_ate.noise import import_noise, save_noise

    noise = import_noise(source)
    save_noise(noise, out)
    print(f"wrote {out}: shape {list(noise.shape)} from {source} sha256 {noise.sha256}")
    return EXIT_PASS


def forward_kinematics_tool(
    robot: RobotModel,
    *,
    input_csv: Path | None = None,
    dataset: Path | None = None,
    episode: int = 0,
    key: str = "observation.state",
    output: Path | None = None,
    units: str | None = None,
    frame: str = "tcp",
    plot: Path | None = None,
) -> int:
    """End-effector poses of a joint CSV or of a recorded episode, as a pose CSV and/or a 3D path plot."""
    from verify_ate.kinematics import arm_poses
    from verify_ate.kinematics.robot import check_recorded_range
    from verify_ate.verify.data.joint_csv import read_joint_csv, write_pose_csv

    if dataset is not None:
        from verify_ate.verify.data.observation import episode_joint_path

        joints = episode_joint_path(dataset, episode, key=key)
        if joints.shape[-1] != len(robot.dataset_joint_names):
            raise InputError(
                f"{dataset}: {key!r} holds {joints.shape[-1]} values, robot {robot.name} has "
                f"{len(robot.dataset_joint_names)}"
            )
        source_name = f"{dataset.name} episode {episode}"
    else:
        assert input_csv is not None
        joints = read_joint_csv(input_csv, robot)
        source_name = input_csv.name
    units = units or robot.dataset_units
    if not robot.end_effector:
        check_recorded_range(robot, joints.min(axis=0), joints.max(axis=0), units, str(dataset or input_csv))
    poses = arm_poses(robot, joints, units=units, frame=frame)
    if output is not None:
        write_pose_csv(poses if robot.two_armed else next(iter(poses.values())), output)
        print(f"wrote {output}: {len(joints)} poses ({frame}, robot {robot.name})")
    if plot is not None:
        from verify_ate.reports.plots import plot_end_effector_path

        paths = {(f"{arm} arm" if robot.two_armed else "path"): p.position for arm, p in poses.items()}
        plot_end_effector_path(paths, plot, title=f"{source_name}: {robot.name} {frame} path")
        print(f"wrote {plot}")
    return EXIT_PASS


def import_checkpoint_folder(source: Path, out: Path, dataset: Path | None) -> int:
    """An old-format pi0 checkpoint folder written as a lerobot 0.6.1 one at `out`."""
    from verify_ate.verify.model.checkpoint import check_checkpoint_folder
    from verify_ate.verify.model.legacy import import_checkpoint
    from verify_ate.verify.publish import check_output_folder

    check_checkpoint_folder(source)
    check_output_folder(out)
    folder = import_checkpoint(source, out, dataset)
    print(f"wrote {folder}: a lerobot 0.6.1 pi0 checkpoint made from {source}")
    return EXIT_PASS


def import_dataset_folder(source: Path, out: Path) -> int:
    """A LeRobot v2.0/v2.1 dataset written as a v3.0 one at `out` (the source is never modified)."""
    from verify_ate.verify.data.legacy_dataset import dataset_version, import_dataset
    from verify_ate.verify.publish import check_output_folder

    if not source.is_dir():
        raise InputError(f"{source}: dataset folder not found")
    check_output_folder(out)
    version = dataset_version(source)
    folder = import_dataset(source, out)
    print(f"wrote {folder}: LeRobot v3.0, converted from {source} (LeRobot {version})")
    return EXIT_PASS
