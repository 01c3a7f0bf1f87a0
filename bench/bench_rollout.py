"""Closed-loop throughput: paired episodes per minute in the demo world on the CPU, and where the time goes.

    python bench/bench_rollout.py [--policy pi0] [--episodes 10] [--n-action-steps 10] [--cache-dir DIR]

Runs `verify_ate.verify.run.rollout.rollouts` (both sides in lock step, the demo's tiny policy, CPU float32 against
CPU bfloat16) and splits its wall time into the policy (lerobot's preprocessor, model and postprocessor, per side),
the demo world's physics (forward kinematics, limits, goal) and rendering (the drawn cameras), and the rest (the
harness: noise derivation, recording). The baseline, measured in the same run: lerobot's own
`predict_action_chunk` on the same frames and noise, called as many times as the rollout predicted, with nothing
around it; the ratio says what the closed loop costs beyond the policy itself. Not a test: nothing here asserts a
time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from verify_ate.kinematics import load_robot
from verify_ate.noise import make_noise
from verify_ate.verify.envs.factory import make_environment
from verify_ate.verify.run.inputs import DemoSource, prepare_inputs
from verify_ate.verify.run.rollout import RolloutPlan, chunk_noise, rollouts
from verify_ate.verify.run.sides import SideConfig, load_runner


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="pi0", help="the demo's policy (default pi0)")
    parser.add_argument("--episodes", type=int, default=10, help="paired episodes (default 10)")
    parser.add_argument("--n-action-steps", type=int, default=10, help="actions executed per chunk (default 10)")
    parser.add_argument("--cache-dir", type=Path, help="demo cache (default: $VERIFY_ATE_CACHE or ~/.cache/verify-ate)")
    return parser.parse_args()


def bare_policy_seconds(side: SideConfig, inputs, make_env, plan: RolloutPlan, calls: int) -> float:
    """lerobot's `predict_action_chunk` alone, `calls` times, on the first observations of the plan's episodes."""
    import torch

    world = make_env()
    frames = [world.reset(seed).frame for seed in plan.seeds]
    world.close()
    with load_runner(side, inputs.checkpoint, inputs.observations.stats) as runner:
        noise = make_noise(0, runner.expected_noise_shape)
        batches = [runner._preprocess([frame]) for frame in frames]  # the preprocessor is timed in the rollout
        tensors = [runner.noise_tensor(chunk_noise(noise, seed, 1), 1) for seed in plan.seeds]
        started = time.perf_counter()
        with torch.inference_mode():
            for call in range(calls):
                runner._infer(batches[call % len(batches)], tensors[call % len(tensors)])
        return time.perf_counter() - started


def main() -> int:
    args = parse_args()
    source = DemoSource(args.cache_dir, policy=args.policy)
    robot = load_robot(source.demo.profile().robot)
    inputs = prepare_inputs(source, robot, 0, 0, None)
    make_env = make_environment("demo", source.demo.profile())
    plan = RolloutPlan("demo", args.episodes, 0, args.n_action_steps)
    sides = (SideConfig("cpu", "float32", iters=0), SideConfig("cpu", "bfloat16", iters=0))
    started = time.perf_counter()
    reference, _ = rollouts(sides, inputs.checkpoint, inputs.observations.stats, make_env, plan, None, "")
    total = time.perf_counter() - started
    timings = reference.meta["timings"]
    loop = timings["wall_s"]
    policy = timings["policy_s"]
    physics, render = timings["environment_s"]["physics_s"], timings["environment_s"]["render_s"]
    steps = reference.actions.shape[1]
    chunks = -(-steps // reference.meta["n_action_steps"])
    calls = chunks * args.episodes
    bare = [bare_policy_seconds(side, inputs, make_env, plan, calls) for side in sides]
    rest = loop - sum(policy) - physics - render
    print(f"{args.policy} demo world, {args.episodes} paired episodes x {steps} steps, {calls} chunks per side")
    print(f"  loading both sides and the first reset: {total - loop:.2f} s")
    print(f"  the episodes: {loop:.2f} s = {60 * args.episodes / loop:.1f} paired episodes per minute")
    print(f"  {'part':36s} {'seconds':>8s} {'share':>6s}")
    for name, seconds in (
        ("policy, reference (cpu float32)", policy[0]),
        ("policy, under test (cpu bfloat16)", policy[1]),
        ("physics (FK, limits, goal)", physics),
        ("rendering (cameras)", render),
        ("harness (noise, records)", rest),
    ):
        print(f"  {name:36s} {seconds:8.3f} {seconds / loop:6.1%}")
    for side, seconds, bare_seconds in zip(sides, policy, bare, strict=True):
        print(
            f"  lerobot predict_action_chunk alone, {side.label}: {bare_seconds:.3f} s for {calls} calls; in the "
            f"loop {seconds:.3f} s ({seconds / bare_seconds:.2f}x, the processors and the batch around it)"
        )
    print(f"  the whole loop against the bare policy calls of both sides: {loop / sum(bare):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
