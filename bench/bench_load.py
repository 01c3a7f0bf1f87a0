"""Loading a pi0 checkpoint: verify-ate's loader against lerobot's own `PI0Policy.from_pretrained`.

    python bench/bench_load.py [--profile configs/profiles/bench_pi0.yaml] [--dtype float32] [--repeats 2]

Both load the same checkpoint folder (written once, from configs/profiles/bench_pi0.yaml: the real
257152-token vocabulary with reduced transformers, about 0.72B parameters, 2.9 GB in float32) onto
the CPU, in the same process, alternating, each timed from nothing to a model ready for inference:

  * lerobot: `PI0Policy.from_pretrained(folder, config=...)`: builds the model with random
    initialisation, reads the whole file into memory, copies every tensor in;
  * verify-ate: `load_policy`: structure on the meta device, tensors streamed from the file
    straight into the requested dtype, then the sampled proof that they came from the file.

Prints seconds, the ratio, and the peak resident memory each added. Not a test: nothing here
asserts a time. Target (issue 9): at least 5x faster.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=REPO / "configs" / "profiles" / "bench_pi0.yaml")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--repeats", type=int, default=2, help="timed loads per loader, alternating (default 2)")
    parser.add_argument("--checkpoint", type=Path, help="reuse a checkpoint folder written by an earlier run")
    return parser.parse_args()


def write_checkpoint(profile_path: Path, out_dir: Path) -> Path:
    import torch

    from verify_ate.verify.configs import read_yaml
    from verify_ate.verify.model.seeded import SeededCheckpoint, save_seeded_checkpoint

    profile = read_yaml(profile_path, "bench profile")
    stats = {
        key: {"mean": [0.0] * 6, "std": [1.0] * 6, "min": [-1.0] * 6, "max": [1.0] * 6}
        for key in ("observation.state", "action")
    }
    return save_seeded_checkpoint(SeededCheckpoint(profile, 0, stats), out_dir, torch.device("cpu"))


def load_lerobot(folder: Path, dtype: str):
    from lerobot.policies.pi0 import PI0Policy

    from verify_ate.verify.model.architecture import checkpoint_architecture
    from verify_ate.verify.model.checkpoint import load_pi0_config

    config = load_pi0_config(folder, [f"--dtype={dtype}"])
    with checkpoint_architecture(folder), contextlib.redirect_stdout(io.StringIO()):
        return PI0Policy.from_pretrained(str(folder), config=config, local_files_only=True).eval()


def load_verify_ate(folder: Path, dtype: str):
    import torch

    from verify_ate.verify.model.checkpoint import load_pi0_config, load_policy
    from verify_ate.verify.model.weights import checkpoint_weights

    config = load_pi0_config(folder, [f"--dtype={dtype}"])
    policy, _ = load_policy(folder, config, checkpoint_weights(folder), torch.device("cpu"))
    return policy


def timed(load, folder: Path, dtype: str) -> tuple[float, float, object]:
    import gc

    from verify_ate.verify.model.devices import MemoryMonitor

    gc.collect()
    import torch

    monitor = MemoryMonitor(torch.device("cpu"))
    started = time.perf_counter()
    policy = load(folder, dtype)
    seconds = time.perf_counter() - started
    return seconds, monitor.read()["host_rss_increase_mib"], policy


def main() -> int:
    args = parse_args()
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.checkpoint
        if folder is None:
            print(f"writing the benchmark checkpoint from {args.profile} ...", flush=True)
            started = time.perf_counter()
            folder = write_checkpoint(args.profile, Path(scratch) / "bench_pi0")
            print(f"  written in {time.perf_counter() - started:.1f} s", flush=True)
        size = sum(path.stat().st_size for path in folder.glob("model*.safetensors"))
        print(
            f"checkpoint {folder}: {size / 2**30:.2f} GiB of weights; loading in {args.dtype} on the CPU "
            f"({torch.get_num_threads()} threads)",
            flush=True,
        )
        times: dict[str, list[float]] = {"lerobot": [], "verify-ate": []}
        memory: dict[str, list[float]] = {"lerobot": [], "verify-ate": []}
        parameters = None
        for _ in range(args.repeats):
            for name, load in (("lerobot", load_lerobot), ("verify-ate", load_verify_ate)):
                seconds, added, policy = timed(load, folder, args.dtype)
                parameters = sum(p.numel() for p in policy.parameters())
                times[name].append(seconds)
                memory[name].append(added)
                print(f"  {name:<10} {seconds:7.2f} s   +{added:8.0f} MiB resident", flush=True)
                del policy
        print(f"\n{parameters:,} parameters, {args.dtype}, median of {args.repeats}:")
        ours, theirs = statistics.median(times["verify-ate"]), statistics.median(times["lerobot"])
        print(f"  lerobot PI0Policy.from_pretrained  {theirs:7.2f} s   +{statistics.median(memory['lerobot']):.0f} MiB")
        print(
            f"  verify-ate load_policy             {ours:7.2f} s   +{statistics.median(memory['verify-ate']):.0f} MiB"
        )
        print(f"  -> verify-ate loads {theirs / ours:.1f}x faster (target >= 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
