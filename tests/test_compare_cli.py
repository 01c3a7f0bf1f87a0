"""`verify-ate compare` through the real console script: verdicts, files, and every refusal."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import koch_actions, make_artifact, run_cli

from verify_ate.verify.compare.artifact import save_artifact


@pytest.fixture
def pair(tmp_path, rng):
    """A reference artifact and a slightly perturbed device-under-test artifact (same inputs)."""
    actions = koch_actions(rng, n=2)
    reference = save_artifact(make_artifact(actions.astype(np.float32)), tmp_path / "ref.npz")
    nudged = actions + rng.normal(scale=0.05, size=actions.shape)
    under_test = save_artifact(
        make_artifact(nudged.astype(np.float32), device="cpu", dtype="bfloat16"), tmp_path / "dut.npz"
    )
    return reference, under_test, actions


def _one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("verify-ate"), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_identical_artifacts_pass_with_exactly_zero_error(pair, tmp_path):
    reference, _, _ = pair
    result = run_cli("compare", reference, reference, "--json", tmp_path / "s.json", "--out", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("PASS")
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["pass"] is True
    assert summary["n_steps"] == 100
    for key in ("position", "orientation"):
        assert set(summary[key]) >= {"rmse", "mean", "median", "std", "min", "max", "p95", "threshold", "stat", "pass"}
        assert summary[key]["max"] == 0.0
    assert summary["position"]["threshold"] == 0.03
    assert summary["orientation"]["threshold"] == 0.2
    assert set(summary["joints"]) == {
        "shoulder_pan",
        "shoulder_lift",
        "elbow_flex",
        "wrist_flex",
        "wrist_roll",
        "gripper",
    }
    assert summary["ref"]["device"] == "cpu"
    assert "dut" in summary
    for name in ("summary.json", "summary.md", "junit.xml"):
        assert (tmp_path / "report" / name).is_file()


def test_small_perturbation_passes_and_reports_nonzero_error(pair, tmp_path):
    reference, under_test, _ = pair
    result = run_cli("compare", reference, under_test, "--json", tmp_path / "s.json")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert 0 < summary["position"]["rmse"] < 0.03
    assert 0 < summary["orientation"]["rmse"] < 0.2


def test_tight_bound_fails_the_gate_with_exit_1_and_junit_says_which(pair, tmp_path):
    reference, under_test, _ = pair
    junit = tmp_path / "junit.xml"
    result = run_cli("compare", reference, under_test, "--pos-tol", "1e-6", "--stat", "max", "--junit", junit)
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL")
    assert "position max" in result.stdout
    assert "OVER bound 1e-06 m" in result.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "4"  # position, orientation, finite, gripper
    assert suite.get("failures") == "1"
    failed = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert failed == ["position ATE max <= 1e-06 m"]


def test_nonfinite_actions_fail_the_gate_naming_the_first_bad_step_and_joint(pair, tmp_path):
    reference, _, actions = pair
    broken = actions.copy()
    broken[1, 7, 2] = np.nan
    broken[1, 9:12, 4] = np.inf
    under_test = save_artifact(make_artifact(broken), tmp_path / "nan.npz")
    out = tmp_path / "report"
    result = run_cli("compare", reference, under_test, "--json", tmp_path / "s.json", "--out", out)
    assert result.returncode == 1
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["pass"] is False
    assert summary["finite"] is False
    assert summary["position"]["rmse"] is None  # NaN is written as null
    finite = next(check for check in summary["checks"] if check["name"] == "finite")
    assert finite["message"] == (
        "under test: 4 non-finite action values (NaN/Inf), the first at chunk 1 step 7 joint elbow_flex"
    )
    assert "chunk 1 step 7 joint elbow_flex" in result.stdout
    assert "chunk 1 step 7" in (out / "junit.xml").read_text()
    page = (out / "index.html").read_text()  # the report still draws every finite value
    assert "step 7 joint elbow_flex" in page
    assert all((out / name).is_file() for name in ("position_error.png",))
    # A reference that is itself non-finite is named as the reference's fault.
    swapped = run_cli("compare", under_test, reference, "--json", tmp_path / "r.json")
    assert swapped.returncode == 1
    assert "the REFERENCE itself: 4 non-finite" in swapped.stdout
    assert "under test:" not in swapped.stdout


def test_bare_npy_in_radians_equals_the_degree_artifact(pair, tmp_path):
    reference, _, actions = pair
    np.save(tmp_path / "dut_rad.npy", np.radians(actions))
    np.save(tmp_path / "ref_one.npy", actions[0])
    ok = run_cli("compare", tmp_path / "ref_one.npy", tmp_path / "ref_one.npy", "--units", "deg")
    assert ok.returncode == 0, ok.stderr
    rad = run_cli(
        "compare", tmp_path / "dut_rad.npy", tmp_path / "dut_rad.npy", "--units", "rad", "--json", tmp_path / "s.json"
    )
    assert rad.returncode == 0, rad.stderr
    no_units = run_cli("compare", tmp_path / "ref_one.npy", tmp_path / "ref_one.npy")
    _one_line_error(no_units, "ref_one.npy", "a bare .npy has no units of its own; give them (--units deg or rad)")


def test_bad_inputs_are_one_line_exit_2_and_write_no_report(pair, tmp_path):
    reference, _, actions = pair
    out = tmp_path / "never"
    (tmp_path / "text.npz").write_text("not a zip")
    np.savez(tmp_path / "pickled.npz", actions=np.array([object()], dtype=object), meta=np.array("{}"))
    save_artifact(make_artifact(actions[..., :5], joint_names=["a", "b", "c", "d", "e"]), tmp_path / "five.npz")
    save_artifact(make_artifact(actions[:1]), tmp_path / "one_chunk.npz")
    save_artifact(make_artifact(actions[:, :40]), tmp_path / "short.npz")
    save_artifact(make_artifact(actions, noise_sha256="f" * 64), tmp_path / "other_noise.npz")
    save_artifact(make_artifact(actions, observation_sha256="e" * 64), tmp_path / "other_obs.npz")
    save_artifact(make_artifact(actions, checkpoint_sha256="d" * 64), tmp_path / "other_checkpoint.npz")
    cases = [
        (tmp_path / "absent.npz", ["absent.npz: file not found"]),
        (tmp_path / "text.npz", ["text.npz: not an .npz trajectory artifact"]),
        (tmp_path / "pickled.npz", ["pickled.npz: holds pickled objects"]),
        (tmp_path / "five.npz", ["five.npz", "joints"]),
        (tmp_path / "one_chunk.npz", ["one_chunk.npz: chunk count N differs"]),
        (tmp_path / "short.npz", ["short.npz: horizon T differs"]),
        (
            tmp_path / "other_noise.npz",
            ["other_noise.npz: noise differs", "(noise sha256 ffffffffffff... vs aaa", "--force"],
        ),
        (tmp_path / "other_obs.npz", ["other_obs.npz: observation differs", "did not see the same input"]),
        (tmp_path / "other_checkpoint.npz", ["other_checkpoint.npz: checkpoint differs", "--converted-checkpoint"]),
    ]
    for under_test, fragments in cases:
        result = run_cli("compare", reference, under_test, "--out", out, "--json", tmp_path / "s.json")
        _one_line_error(result, *fragments)
    unknown = run_cli("compare", reference, reference, "--robot", "ur5", "--out", out)
    _one_line_error(unknown, "unknown robot 'ur5'")
    assert not out.exists()
    assert not (tmp_path / "s.json").exists()


def test_force_compares_artifacts_of_different_inputs(pair, tmp_path):
    reference, _, actions = pair
    other = save_artifact(make_artifact(actions, noise_sha256="f" * 64), tmp_path / "other_noise.npz")
    result = run_cli("compare", reference, other, "--force", "--json", tmp_path / "s.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["forced"] is True


def test_artifact_is_readable_without_pickle_and_written_atomically(pair, tmp_path):
    reference, _, actions = pair
    with np.load(reference, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        np.testing.assert_array_equal(archive["actions"], actions[:].astype(np.float32))
    assert meta["schema"] == "verify-ate/trajectory/v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dut.npz", "ref.npz"]
