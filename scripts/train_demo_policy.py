"""Regenerate the committed trained tiny pi0 of `verify-ate --demo`: verify/model/demo_policy/.

    .venv/bin/python scripts/train_demo_policy.py            # about 2 minutes on one CPU thread

Run it after changing configs/profiles/demo_training.yaml (the recipe), demo_dataset.yaml or
tiny_pi0.yaml (the dataset and the sizes), or upgrading lerobot, transformers or torch: until then the
demo finds the committed folder stale (its training.json names what it was trained on) and trains a
copy into its cache on first use. The demo dataset is written (by lerobot) into the demo cache
(--cache-dir, default $VERIFY_ATE_CACHE or ~/.cache/verify-ate) if it is not there yet. The new folder
replaces the old one whole; commit it with its training.json and loss_curve.png.
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
from verify_ate.verify.data.demo_dataset import (
    default_cache_dir,
    ensure_demo_dataset,
    load_demo_profile,
    profile_cache_key,
)
from verify_ate.verify.data.observation import load_chunk_frames, load_frames
from verify_ate.verify.model.training import COMMITTED_POLICY, TRAINING_FILE, train_demo_policy
from verify_ate.verify.run.inputs import demo_tracking_error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="the demo cache holding the demo dataset")
    parser.add_argument("--out", type=Path, default=COMMITTED_POLICY, help=f"default {COMMITTED_POLICY}")
    args = parser.parse_args()

    cache = args.cache_dir or default_cache_dir()
    dataset = ensure_demo_dataset(cache)
    demo = load_demo_profile()
    stats = load_frames(dataset, 0, [0]).stats or {}  # the statistics a demo run builds its processors from
    robot = load_robot(demo.robot)
    with tempfile.TemporaryDirectory(prefix=".demo_policy.", dir=args.out.parent) as scratch:
        trained = train_demo_policy(
            Path(scratch) / args.out.name,
            lambda chunk_size: load_chunk_frames(dataset, chunk_size),
            stats,
            profile_cache_key(demo),
            evaluate=lambda folder: demo_tracking_error(folder, dataset, robot),
        )
        with atomic_folder(args.out) as staging:
            shutil.copytree(trained, staging, dirs_exist_ok=True)
    record = json.loads((args.out / TRAINING_FILE).read_text(encoding="utf-8"))
    tracking = record["tracking"]
    size = sum(path.stat().st_size for path in args.out.iterdir())
    print(
        f"{args.out}: {record['recipe']['steps']} steps in {record['wall_seconds']:.1f} s "
        f"({record['versions']['torch']} torch, {record['recipe']['threads']} thread), final loss "
        f"{record['final_loss']:.4f}; TCP distance to the recorded chunks: mean "
        f"{tracking['mean_tcp_distance_m'] * 1000:.1f} mm, max {tracking['max_tcp_distance_m'] * 1000:.1f} mm; "
        f"{size / 1e6:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
