"""FK + ATE throughput on one CPU core, beside established libraries doing the same work.

    python bench/bench_fk_ate.py [--poses 1000000]

Workload: N reference and N under-test joint vectors (Koch v1.1, dataset degrees) -> flange poses
of both -> per-step position and orientation error and their statistics. Compared in the same run:
  * FK: pytorch_kinematics (float64, CPU, one thread) on bench/koch_v1_1.urdf, the same chain.
  * ATE: evo's APE (translation part, rotation angle) on a subset, its rate per pose extrapolated
    (evo works on lists of SE(3) matrices; a million would take minutes).
Prints poses/s for each and the ratios. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from verify_ate.kinematics import Poses, dataset_forward_kinematics, load_robot
from verify_ate.verify.compare.metrics import AbsoluteTrajectoryError

URDF = Path(__file__).resolve().parent / "koch_v1_1.urdf"


def best_of(repeats: int, work):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def ours(robot, reference, under_test):
    ref_poses = dataset_forward_kinematics(robot, reference, frame="flange")
    dut_poses = dataset_forward_kinematics(robot, under_test, frame="flange")
    return (
        AbsoluteTrajectoryError.position(ref_poses, dut_poses),
        AbsoluteTrajectoryError.orientation(ref_poses, dut_poses),
        ref_poses,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", type=int, default=1_000_000)
    parser.add_argument("--evo-poses", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    robot = load_robot("koch_v1_1")
    rng = np.random.default_rng(0)
    q_model = rng.uniform(robot.lower_limits, robot.upper_limits, size=(args.poses, robot.n_joints))
    gripper = np.zeros((args.poses, 1))
    reference = np.concatenate([robot.model_to_dataset(q_model), gripper], axis=-1)
    under_test = reference + rng.normal(scale=0.2, size=reference.shape)

    print(
        f"FK + ATE, {args.poses:,} pose pairs (2 x {args.poses:,} FK evaluations), float64, 1 thread, best "
        f"of {args.repeats}"
    )
    ours_s, (position, orientation, ref_poses) = best_of(args.repeats, lambda: ours(robot, reference, under_test))
    fk_s, _ = best_of(args.repeats, lambda: dataset_forward_kinematics(robot, reference, frame="flange"))
    print(f"  verify-ate FK+ATE total        {ours_s * 1e3:9.1f} ms   {args.poses / ours_s:14,.0f} pose pairs/s")
    print(f"  verify-ate FK only (1 side)    {fk_s * 1e3:9.1f} ms   {args.poses / fk_s:14,.0f} poses/s")
    print(f"  position rmse {position.statistics.rmse:.6g} m, orientation rmse {orientation.statistics.rmse:.6g} rad")

    try:
        import pytorch_kinematics as pk
        import torch
    except ImportError:
        print("  pytorch_kinematics not installed (pip install 'verify-ate[bench]'): FK comparison skipped")
    else:
        torch.set_num_threads(1)
        chain = pk.build_serial_chain_from_urdf(URDF.read_text(), "gripper_assembly").to(dtype=torch.float64)
        q_torch = torch.from_numpy(robot.dataset_to_model(reference))
        pk_s, matrices = best_of(args.repeats, lambda: chain.forward_kinematics(q_torch).get_matrix())
        agreement = float(np.max(np.abs(matrices[:, :3, 3].numpy() - ref_poses.position)))
        print(
            f"  pytorch_kinematics FK (1 side) {pk_s * 1e3:9.1f} ms   {args.poses / pk_s:14,.0f} poses/s"
            f"   -> verify-ate FK is {pk_s / fk_s:.1f}x faster (positions agree to {agreement:.1e} m)"
        )

    try:
        from evo.core import metrics
        from evo.core.trajectory import PoseTrajectory3D
    except ImportError:
        print("  evo not installed: ATE comparison skipped")
        return 0
    n = min(args.evo_poses, args.poses)
    sub_ref = dataset_forward_kinematics(robot, reference[:n], frame="flange")
    sub_dut = dataset_forward_kinematics(robot, under_test[:n], frame="flange")

    def trajectory(poses: Poses):
        return PoseTrajectory3D(poses_se3=list(poses.matrix()), timestamps=np.arange(n, dtype=float))

    def evo_ape():
        pair = (trajectory(sub_ref), trajectory(sub_dut))
        results = []
        for relation in (metrics.PoseRelation.translation_part, metrics.PoseRelation.rotation_angle_rad):
            ape = metrics.APE(relation)
            ape.process_data(pair)
            results.append(ape.get_all_statistics())
        return results

    evo_s, (evo_position, _) = best_of(1, evo_ape)
    ours_ate_s, (our_position, _) = best_of(
        args.repeats,
        lambda: (
            AbsoluteTrajectoryError.position(sub_ref, sub_dut),
            AbsoluteTrajectoryError.orientation(sub_ref, sub_dut),
        ),
    )
    print(
        f"  evo APE (pos+rot, {n:,} pairs)  {evo_s * 1e3:9.1f} ms   {n / evo_s:14,.0f} pose pairs/s"
        f"   -> verify-ate ATE is {evo_s / ours_ate_s:.0f}x faster (rmse agree: "
        f"{abs(evo_position['rmse'] - our_position.statistics.rmse):.1e} m)"
    )
    print(f"  evo APE extrapolated to {args.poses:,} pairs: {evo_s * args.poses / n:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
