"""What the harness costs around pi0, and what batching buys a sweep (tiny pi0, CPU).

    python bench/bench_harness.py [--cache-dir DIR] [--threads 1] [--repeats 30] [--frames 16]

1. Harness overhead, per inference of one frame (and of a batch of 8), medians of interleaved runs:
   * model:   `policy.predict_action_chunk(batch, noise=...)` on an already preprocessed batch
              (the bare lerobot call);
   * lerobot: lerobot's pipeline as a user would loop it: preprocessor -> predict_action_chunk ->
              postprocessor;
   * harness: `Pi0Runner.predict(frames, noise)`, what `verify-ate` runs (stacking dataset items,
              noise checks, the same pipeline, actions to NumPy).
   The overhead is harness vs lerobot and harness vs model; since both differences sit within the
   run-to-run noise of a shared machine, the harness's own work (stacking, noise checks, NumPy
   conversion) is also timed alone and shown as a share of the model call.
2. Sweep throughput: the sweep's own side pass (verify.sweep.run_side_pass) over the same frames
   with --batch-size 8 and 1: model frames/s (synchronised) and decode time, after one warm-up pass.

One intra-op thread by default: this machine is shared, and a thread per core fights other jobs.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, help="demo cache (default: $VERIFY_ATE_CACHE or ~/.cache/verify-ate)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per variant (default 30)")
    parser.add_argument("--frames", type=int, default=16, help="frames in the throughput sweep (default 16)")
    return parser.parse_args()


def interleaved(variants: dict, repeats: int, warmup: int = 3) -> dict:
    """Median ms of each callable, run round-robin so that machine load hits all alike."""
    for _ in range(warmup):
        for call in variants.values():
            call()
    samples = {name: [] for name in variants}
    for _ in range(repeats):
        for name, call in variants.items():
            started = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - started) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def overhead(runner, frames, noise_rows, repeats: int) -> dict:
    import torch

    from verify_ate.verify.model.runner import stack_frames

    policy = runner.policy
    noise = torch.from_numpy(noise_rows.copy())
    batch = runner.preprocessor(stack_frames(frames, runner.camera_keys))

    def model():
        return policy.predict_action_chunk(batch, noise=noise)

    def lerobot():
        prepared = runner.preprocessor(stack_frames(frames, runner.camera_keys))
        return runner.postprocessor(policy.predict_action_chunk(prepared, noise=noise))

    def harness():
        return runner.predict(frames, noise_rows)

    actions = model()

    def harness_own_work():
        """What the harness adds to lerobot's pipeline, timed alone: stacking the dataset items,
        checking and placing the noise, actions to NumPy."""
        stack_frames(frames, runner.camera_keys)
        runner.noise_tensor(noise_rows, len(frames))
        return actions[..., : runner.action_dim].detach().to("cpu", dtype=torch.float32).numpy()

    with torch.inference_mode():
        return interleaved({"model": model, "lerobot": lerobot, "harness": harness, "own": harness_own_work}, repeats)


def main() -> int:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    import numpy as np
    import torch

    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    from verify_ate.kinematics import load_robot
    from verify_ate.noise import make_noise
    from verify_ate.verify.data.demo_dataset import default_cache_dir, ensure_demo_dataset
    from verify_ate.verify.data.observation import load_frames
    from verify_ate.verify.model.runner import Pi0Runner
    from verify_ate.verify.model.tiny import ensure_tiny_checkpoint
    from verify_ate.verify.run.plan import FrameRange, NoiseSource, plan_sweep
    from verify_ate.verify.run.sides import SideConfig
    from verify_ate.verify.run.sweep import run_side_pass

    cache = args.cache_dir or default_cache_dir()
    dataset = ensure_demo_dataset(cache)
    observations = load_frames(dataset, 0, list(range(8)))
    checkpoint = ensure_tiny_checkpoint(Path(cache) / "checkpoints", observations.stats, seed=0)
    print(
        f"tiny pi0 (lerobot {__import__('lerobot').__version__} PI0Policy, random weights), torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), CPU: {os.cpu_count()} cores"
    )

    print(f"\n1. harness overhead (median ms per call, interleaved, {args.repeats} calls each)")
    print(
        f"{'batch':>5} {'model':>9} {'lerobot':>9} {'harness':>9} {'vs lerobot':>11} {'vs model':>9} "
        f"{'own work':>9} {'own/model':>10}"
    )
    with Pi0Runner(checkpoint, "cpu", "float32", observations.stats) as runner:
        for size in (1, 8):
            rows = np.concatenate([make_noise(seed, runner.expected_noise_shape).values for seed in range(size)])
            times = overhead(runner, observations.frames[:size], rows, args.repeats)
            over_lerobot = times["harness"] / times["lerobot"] - 1
            over_model = times["harness"] / times["model"] - 1
            print(
                f"{size:>5} {times['model']:>9.2f} {times['lerobot']:>9.2f} {times['harness']:>9.2f} "
                f"{over_lerobot:>+10.1%} {over_model:>+8.1%} {times['own']:>9.3f} "
                f"{times['own'] / times['model']:>10.2%}"
            )

    print(f"\n2. sweep throughput, {args.frames} frames of episode 0, seed 0 (verify.sweep.run_side_pass, fp32 CPU)")
    robot = load_robot("koch_v1_1")
    side = SideConfig("cpu", "float32", 0)
    noise = NoiseSource(seeds=[0])
    results = {}
    for size in (8, 1, 8, 1):  # the first pass of each warms the kernels up for its shapes
        plan = plan_sweep(dataset, [0], FrameRange(0, args.frames, 1), [0], size)
        side_pass = run_side_pass(
            side, checkpoint, plan, list(range(len(plan.batches))), noise, observations.stats, robot
        )
        results[size] = side_pass
    print(f"{'batch':>5} {'passes':>7} {'model s':>8} {'frames/s':>9} {'decode s':>9}")
    for size, side_pass in sorted(results.items(), reverse=True):
        passes = -(-args.frames // size)
        print(
            f"{size:>5} {passes:>7} {side_pass.predict_seconds:>8.2f} {args.frames / side_pass.predict_seconds:>9.1f} "
            f"{side_pass.load_seconds:>9.2f}"
        )
    speedup = results[1].predict_seconds / results[8].predict_seconds
    print(f"batched (8) vs one frame at a time: {speedup:.2f}x model throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
