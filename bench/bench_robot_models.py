"""FK read from model files: the tool's own URDF/MJCF chains beside MuJoCo, pinocchio and pytorch_kinematics.

    python bench/bench_robot_models.py [--poses 1000000] [--library-poses 20000]

The choice this measures (docs/robots.md): read URDF and MJCF files with the tool's own readers into one
batched NumPy chain, or depend on a maintained reader at run time. For each robot model (Koch v1.1 as DH rows
and as its MJCF, the SO-101 URDF, one ALOHA arm from the Menagerie MJCF, the Panda MJCF) it times, on one core:
  * verify-ate: `chain_poses` of the chain read from the file, over `--poses` configurations;
  * MuJoCo: `mj_kinematics` per configuration (joints set by name), over `--library-poses`, rate extrapolated;
  * pinocchio (URDFs): `framesForwardKinematics` per configuration, the same way;
  * pytorch_kinematics (URDFs, when installed: `pip install -e '.[bench]'`): batched float64, one thread;
and the largest position and rotation difference from MuJoCo over the library's configurations (the tests
hold it under 1e-9 m / 1e-9 rad over 10,000). Prints poses/s and ratios. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verify_ate.kinematics import load_robot
from verify_ate.kinematics.chain import Chain, chain_poses
from verify_ate.kinematics.model_files import read_chain
from verify_ate.kinematics.robot import MODELS_DIR
from verify_ate.kinematics.rotations import geodesic_angle


@dataclass(frozen=True)
class Case:
    label: str
    chain: Chain
    model_file: Path  # what MuJoCo (and pinocchio, for a URDF) loads
    tool: str  # the body, link or site whose pose is the chain's flange
    model_joints: tuple[str, ...] = ()  # the model file's names of the chain's joints, when the chain's differ

    @property
    def joints(self) -> tuple[str, ...]:
        return self.model_joints or tuple(self.chain.joint_names)


def cases() -> list[Case]:
    koch = load_robot("koch_v1_1").arm.chain
    koch_file = read_chain(MODELS_DIR / "koch_v1_1.xml", "gripper_assembly")
    so101 = load_robot("so101").arm.chain
    return [
        Case(
            "Koch v1.1, DH rows",
            koch,
            MODELS_DIR / "koch_v1_1.xml",
            "gripper_assembly",
            tuple(koch_file.joint_names),
        ),
        Case("Koch v1.1, MJCF", koch_file, MODELS_DIR / "koch_v1_1.xml", "gripper_assembly"),
        Case("SO-101, URDF", so101, MODELS_DIR / "so101_new_calib.urdf", "gripper_frame_link"),
        Case(
            "ALOHA left arm, MJCF",
            read_chain(MODELS_DIR / "aloha.xml", "left/gripper"),
            MODELS_DIR / "aloha.xml",
            "left/gripper",
        ),
        Case("Panda, MJCF", read_chain(MODELS_DIR / "panda.xml", "hand"), MODELS_DIR / "panda.xml", "hand"),
    ]


def configurations(chain: Chain, count: int, seed: int = 0) -> np.ndarray:
    low = np.where(np.isfinite(chain.lower), chain.lower, -np.pi)
    high = np.where(np.isfinite(chain.upper), chain.upper, np.pi)
    return np.random.default_rng(seed).uniform(low, high, size=(count, chain.n_joints))


def best_of(repeats: int, work: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def mujoco_readable(path: Path, scratch: Path) -> Path:
    """A URDF as MuJoCo keeps its fixed links as bodies (its default fuses them into their parents)."""
    if path.suffix != ".urdf":
        return path
    text = path.read_text()
    opening = re.search(r"<robot\b[^>]*>", text)
    if opening is None:
        raise ValueError(f"{path}: no <robot> element")
    copy = scratch / path.name
    copy.write_text(text[: opening.end()] + '<mujoco><compiler fusestatic="false"/></mujoco>' + text[opening.end() :])
    return copy


def mujoco_fk(path: Path, tool: str, joints, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import mujoco

    model = mujoco.MjModel.from_xml_path(str(path))
    data = mujoco.MjData(model)
    ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name) for name in joints]
    if min(ids) < 0:
        raise ValueError(f"{path}: no joint named {joints[ids.index(min(ids))]!r}")
    addresses = [model.jnt_qposadr[i] for i in ids]
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, tool)
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, tool)
    positions, rotations = np.empty((len(q), 3)), np.empty((len(q), 3, 3))
    for i, row in enumerate(q):
        data.qpos[:] = model.qpos0
        data.qpos[addresses] = row
        mujoco.mj_kinematics(model, data)
        if site >= 0:
            positions[i], rotations[i] = data.site_xpos[site], data.site_xmat[site].reshape(3, 3)
        else:
            positions[i], rotations[i] = data.xpos[body], data.xmat[body].reshape(3, 3)
    return positions, rotations


def pinocchio_fk(path: Path, tool: str, joints, q: np.ndarray) -> None:
    import pinocchio

    model = pinocchio.buildModelFromUrdf(str(path))
    data = model.createData()
    frame = model.getFrameId(tool, pinocchio.FrameType.BODY)
    indices = [model.joints[model.getJointId(joint)].idx_q for joint in joints]
    configuration = pinocchio.neutral(model)
    for row in q:
        configuration[indices] = row
        pinocchio.framesForwardKinematics(model, data, configuration)
        data.oMf[frame]


def pytorch_kinematics_fk(path: Path, tool: str, q: np.ndarray) -> Callable[[], object] | None:
    try:
        import pytorch_kinematics as pk
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    chain = pk.build_serial_chain_from_urdf(path.read_bytes(), tool).to(dtype=torch.float64)
    values = torch.as_tensor(q, dtype=torch.float64)
    return lambda: chain.forward_kinematics(values).get_matrix()


def measure(case: Case, poses: int, library_poses: int, repeats: int, scratch: Path) -> None:
    q = configurations(case.chain, poses)
    ours_s, _ = best_of(repeats, lambda: chain_poses(case.chain, q, frame="flange"))
    ours_rate = poses / ours_s
    print(f"\n{case.label} ({case.chain.n_joints} joints)")
    print(f"  verify-ate chain_poses   {ours_s:8.3f} s for {poses:,}  {ours_rate:14,.0f} poses/s")
    subset = q[:library_poses]
    readable = mujoco_readable(case.model_file, scratch)
    joints = case.joints
    mujoco_s, (positions, rotations) = best_of(1, lambda: mujoco_fk(readable, case.tool, joints, subset))
    mine = chain_poses(case.chain, subset, frame="flange")
    position_gap = float(np.max(np.linalg.norm(np.asarray(mine.position) - positions, axis=-1)))
    rotation_gap = float(np.max(geodesic_angle(np.asarray(mine.rotation), rotations)))
    rate = len(subset) / mujoco_s
    print(
        f"  MuJoCo mj_kinematics     {rate:>39,.0f} poses/s   verify-ate x{ours_rate / rate:.1f}; largest "
        f"difference {position_gap:.1e} m, {rotation_gap:.1e} rad"
    )
    if case.model_file.suffix != ".urdf":
        return
    pin_s, _ = best_of(1, lambda: pinocchio_fk(case.model_file, case.tool, joints, subset))
    rate = len(subset) / pin_s
    print(f"  pinocchio frames FK      {rate:>39,.0f} poses/s   verify-ate x{ours_rate / rate:.1f}")
    batched = pytorch_kinematics_fk(case.model_file, case.tool, q)
    if batched is None:
        print("  pytorch_kinematics not installed (pip install -e '.[bench]'): skipped")
        return
    pk_s, _ = best_of(repeats, batched)
    rate = poses / pk_s
    ratio = ours_rate / rate
    print(f"  pytorch_kinematics       {pk_s:8.3f} s for {poses:,}  {rate:14,.0f} poses/s   verify-ate x{ratio:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", type=int, default=1_000_000)
    parser.add_argument("--library-poses", type=int, default=20_000, help="configurations for the per-pose loops")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"FK of {args.poses:,} configurations per model, float64, 1 thread, best of {args.repeats}; MuJoCo and "
        f"pinocchio loop over {args.library_poses:,}, their rate extrapolated"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases():
            measure(case, args.poses, args.library_poses, args.repeats, Path(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
