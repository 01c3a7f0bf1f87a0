"""Latency of each variant (verify/model/rewrites.py) against lerobot's own eager policy, same run, same inputs.

    python bench/bench_variants.py                                   # the demo's tiny pi0 on the CPU
    python bench/bench_variants.py --policy pi05                     # the demo's tiny pi0.5 (act, diffusion alike)
    python bench/bench_variants.py --size full --device cuda --dtype bfloat16 \
        --variants compile,fused-qkv,sdpa --combine                  # issue 11's GPU target

Every row loads the demo's model on `--device` in `--dtype`, applies the variant(s), and times
`predict_action_chunk` (`Pi0Runner.measure_latency`, device-synchronised, after warm-up calls that
also absorb torch.compile's compilation). The baseline is lerobot's eager model in the same process;
each row prints its median and p90, the ratio to eager, and what it moved the tool centre point
against the eager float32 reference (position and orientation rmse, the gate's figures). Not a test:
nothing here asserts a time.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path


def parse_args():

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny", help="the demo's model (default tiny)")
    parser.add_argument("--policy", default="pi0", help="the demo's policy: pi0, pi05, act, diffusion (default pi0)")
    parser.add_argument("--variants", default=None, help="default: every variant of the policy but compile-cudagraphs")
    parser.add_argument("--combine", action="store_true", help="also one row with all --variants together")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    return parser.parse_args()


def main() -> int:
    import torch

    from verify_ate.kinematics import load_robot
    from verify_ate.noise import make_noise
    from verify_ate.verify.compare.calibration import benign_floor
    from verify_ate.verify.model.rewrites import VARIANT, VARIANTS, applicable, parse_names
    from verify_ate.verify.run.inputs import DemoSource, prepare_inputs
    from verify_ate.verify.run.sides import SideConfig, load_runner

    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    robot = load_robot("koch_v1_1")
    source = DemoSource(args.cache_dir, args.size, policy=args.policy)
    inputs = prepare_inputs(source, robot, 0, 0, None, build_device=args.device)
    everything = [name for name in VARIANTS if name != "compile-cudagraphs"]
    chosen = applicable(everything, "cpu" if args.device == "cpu" else args.device.split(":")[0], args.policy)
    variants = parse_names(args.variants, VARIANT) if args.variants is not None else chosen
    rows: list[tuple[str, tuple[str, ...]]] = [("eager (lerobot)", ())] + [(name, (name,)) for name in variants]
    if args.combine and len(variants) > 1:
        rows.append(("+".join(variants), variants))

    def predict(side: SideConfig):
        with load_runner(side, inputs.checkpoint, inputs.observations.stats) as runner:
            noise = make_noise(0, runner.expected_noise_shape, created_by="bench")
            actions = runner.predict(inputs.observations.frames, noise)
            latency = runner.measure_latency(inputs.observations.frames, noise, args.warmup, args.iters)
        return actions, latency

    reference, _ = predict(SideConfig(args.device, "float32", iters=0))
    base = SideConfig(args.device, args.dtype)
    print(
        f"{args.policy} {args.size} on {args.device} {args.dtype}, threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}; {args.iters} timed calls after {args.warmup} warm-up; ATE against eager "
        f"float32 on {args.device}"
    )
    print(f"{'variant':34s} {'median ms':>10s} {'p90 ms':>9s} {'vs eager':>9s} {'position m':>11s} {'orient rad':>11s}")
    eager_ms = None
    for label, names in rows:
        actions, latency = predict(replace(base, variants=names))
        floor = benign_floor(robot, robot.dataset_units, reference, actions)
        model_ms = latency["model_median_ms"]
        eager_ms = eager_ms or model_ms
        print(
            f"{label:34s} {model_ms:10.2f} {latency['model_p90_ms']:9.2f} {eager_ms / model_ms:8.2f}x "
            f"{floor['position']['rmse']:11.3g} {floor['orientation']['rmse']:11.3g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
