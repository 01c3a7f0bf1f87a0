"""Does the open-loop gate predict closed-loop agreement on this model? Every catalogued fault's open-loop ATE
(`verify-ate selftest`) beside its closed-loop divergence (`verify-ate rollout`), in one table.

    python scripts/closed_loop_evidence.py [--policy pi0] [--episodes 10] [--json evidence.json]

Both halves run the demo (the trained tiny policy on the demo dataset and in the demo world), the reference at
float32 on the CPU and the fault injected into a float32 copy on the CPU, so that a row differs from the
reference by its fault alone; the last rows are the benign changes (bfloat16, and the reference against itself).
The table is Markdown on stdout (docs/rollout.md holds one).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

from verify_ate.verify.cli import main


def _run(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


def _selftest(policy: str, folder: Path) -> dict:
    target = folder / "selftest.json"
    _run(["selftest", "--demo", "--policy", policy, "--json", str(target), "--quiet"])
    return json.loads(target.read_text())


def _rollout(policy: str, episodes: int, folder: Path, name: str, dut: list[str]) -> dict:
    target = folder / f"rollout_{name}.json"
    _run(["rollout", "--demo", "--policy", policy, "--episodes", str(episodes), *dut, "--json", str(target), "--quiet"])
    return json.loads(target.read_text())


def _row(name: str, kind: str, open_loop: dict | None, closed: dict) -> dict:
    divergence, outcomes = closed["divergence"], closed["outcomes"]
    return {
        "name": name,
        "kind": kind,
        "open_loop_position_m": None if open_loop is None else open_loop["position"],
        "open_loop_calibrated_pass": None if open_loop is None else open_loop["calibrated_pass"],
        "closed_loop_final_median_m": divergence["final"]["median"],
        "closed_loop_final_max_m": divergence["final"]["max"],
        "diverged_episodes": divergence["diverged_episodes"],
        "median_time_to_divergence": divergence["median_time_to_divergence"],
        "episodes": closed["episodes"],
        "reference_successes": outcomes["both_succeeded"] + outcomes["reference_only"],
        "under_test_successes": outcomes["both_succeeded"] + outcomes["under_test_only"],
        "mcnemar_p_value": outcomes["mcnemar_p_value"],
    }


def _number(value, digits: str = ".3g") -> str:
    return "—" if value is None else format(value, digits)


def _open_loop(row: dict) -> str:
    """The selftest writes a non-finite figure as null: a fault row with none had non-finite actions."""
    if row["kind"] == "fault" and row["open_loop_position_m"] is None:
        return "non-finite"
    return _number(row["open_loop_position_m"])


def markdown(rows: list[dict], stat: str, bound: float) -> str:
    lines = [
        f"| case | kind | open-loop position {stat} (m) | calibrated gate | closed-loop final divergence, median / max "
        f"(m) | episodes over {bound:g} m | first step over it (median) | successes ref / dut | McNemar p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        gate = {None: "—", True: "pass", False: "FAIL"}[row["open_loop_calibrated_pass"]]
        lines.append(
            f"| `{row['name']}` | {row['kind']} | {_open_loop(row)} | {gate} | "
            f"{_number(row['closed_loop_final_median_m'])} / {_number(row['closed_loop_final_max_m'])} | "
            f"{row['diverged_episodes']}/{row['episodes']} | {_number(row['median_time_to_divergence'], 'g')} | "
            f"{row['reference_successes']} / {row['under_test_successes']} | {row['mcnemar_p_value']:.3g} |"
        )
    return "\n".join(lines)


def main_script(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="pi0", help="the demo's policy (default pi0)")
    parser.add_argument("--episodes", type=int, default=10, help="paired episodes per case (default 10)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        print(f"selftest --demo --policy {args.policy} ...", file=sys.stderr)
        selftest = _selftest(args.policy, folder)
        rows = []
        for case in selftest["cases"]:
            if case["kind"] != "fault":
                continue
            print(f"rollout with {case['name']} injected ...", file=sys.stderr)
            flags = ["--dut", "cpu", "--dut-dtype", "float32", "--inject", case["name"]]
            closed = _rollout(args.policy, args.episodes, folder, case["name"], flags)
            rows.append(_row(case["name"], "fault", case, closed))
        for name, flags in (
            ("bfloat16", ["--dut", "cpu", "--dut-dtype", "bfloat16"]),
            ("identical", ["--dut", "cpu", "--dut-dtype", "float32"]),
        ):
            print(f"rollout {name} ...", file=sys.stderr)
            rows.append(_row(name, "benign", None, _rollout(args.policy, args.episodes, folder, name, flags)))
        bound = json.loads((folder / "rollout_identical.json").read_text())["divergence"]["bound"]
    print(markdown(rows, selftest["stat"], bound))
    if args.json is not None:
        args.json.write_text(json.dumps({"policy": args.policy, "episodes": args.episodes, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main_script())
