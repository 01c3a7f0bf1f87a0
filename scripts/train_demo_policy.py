"""Regenerate a committed trained tiny pi0 of `verify-ate --demo`: verify/model/demo_policy<suffix>/.

    .venv/bin/python scripts/train_demo_policy.py                  # Koch v1.1: verify/model/demo_policy/
    .venv/bin/python scripts/train_demo_policy.py --robot so101    # verify/model/demo_policy_so101/
    .venv/bin/python scripts/train_demo_policy.py --robot aloha    # verify/model/demo_policy_aloha/
    .venv/bin/python scripts/train_demo_policy.py --policy pi05    # verify/model/demo_policy_pi05/

Each takes about 2 minutes on one CPU thread. Run it after changing the robot's demo training recipe
(configs/profiles/demo_training<suffix>.yaml, else demo_training.yaml), its demo dataset profile
(demo_dataset<suffix>.yaml), tiny_pi0.yaml (the sizes) or the robot's model, or upgrading lerobot,
transformers or torch: until then the demo finds the committed folder stale (its training.json names what
it was trained on) and trains a copy into its cache on first use. The demo dataset is written (by lerobot)
into the demo cache (--cache-dir, default $VERIFY_ATE_CACHE or ~/.cache/verify-ate) if it is not there yet.
The new folder replaces the old one whole; commit it with its training.json and loss_curve.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from verify_ate.kinematics import load_robot
from verify_ate.reports.atomic import atomic_folder
from verify_ate.verify.data.demo_dataset import default_cache_dir, ensure_demo_dataset, profile_cache_key
from verify_ate.verify.data.observation import load_chunk_frames, load_frames
from verify_ate.verify.model.policies import supported_policies
from verify_ate.verify.model.training import TRAINING_FILE, train_demo_policy
from verify_ate.verify.run.inputs import DEFAULT_DEMO_ROBOT, demo_files, demo_robots, demo_tracking_error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="the demo cache holding the demo dataset")
    parser.add_argument(
        "--robot",
        default=DEFAULT_DEMO_ROBOT,
        choices=list(demo_robots()),
        help=f"whose demo to train (default {DEFAULT_DEMO_ROBOT})",
    )
    parser.add_argument(
        "--policy", default="pi0", choices=supported_policies(), help="the policy to train (default pi0)"
    )
    parser.add_argument("--out", type=Path, default=None, help="default verify/model/demo_policy<suffix>[_<policy>]/")
    args = parser.parse_args()

    files = demo_files(args.robot, args.policy)
    out = args.out or files.committed
    demo = files.profile()
    cache = args.cache_dir or default_cache_dir()
    dataset = ensure_demo_dataset(cache, demo)
    stats = load_frames(dataset, 0, [0]).stats or {}  # the statistics a demo run builds its processors from
    robot = load_robot(demo.robot)
    with tempfile.TemporaryDirectory(prefix=".demo_policy.", dir=out.parent) as scratch:
        trained = train_demo_policy(
            Path(scratch) / out.name,
            lambda chunk_size: load_chunk_frames(dataset, chunk_size),
            stats,
            profile_cache_key(demo),
            recipe=files.training_recipe(),
            evaluate=lambda folder: demo_tracking_error(folder, dataset, robot),
            profile=files.tiny_profile(demo),
            policy_type=args.policy,
        )
        with atomic_folder(out) as staging:
            shutil.copytree(trained, staging, dirs_exist_ok=True)
    record = json.loads((out / TRAINING_FILE).read_text(encoding="utf-8"))
    tracking = record["tracking"]
    size = sum(path.stat().st_size for path in out.iterdir())
    print(
        f"{out}: {record['recipe']['steps']} steps in {record['wall_seconds']:.1f} s "
        f"({record['versions']['torch']} torch, {record['recipe']['threads']} thread), final loss "
        f"{record['final_loss']:.4f}; TCP distance to the recorded chunks: mean "
        f"{tracking['mean_tcp_distance_m'] * 1000:.1f} mm, max {tracking['max_tcp_distance_m'] * 1000:.1f} mm; "
        f"{size / 1e6:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
