"""Derive modified (Craig) DH parameters from an MJCF serial chain of hinge joints.

The robot configs in configs/robots/ are produced by this tool, so the numbers there are
traceable to the MJCF they came from:

    python -m verify_ate.kinematics.mjcf_to_dh kinematics/models/koch_v1_1.xml \
        --flange gripper_assembly

prints the `base`, `tool` and per-joint DH rows as YAML. Only the kinematic skeleton is read
(body pos/quat, hinge axis): inertials and geoms play no part in forward kinematics.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verify_ate.kinematics.rotations import matrix_to_quaternion, quaternion_to_matrix

_TOLERANCE = 1e-12


@dataclass(frozen=True)
class MjcfJoint:
    name: str
    body: str
    # Pose of the body frame in world at all-zero joint angles; the joint turns about its +z.
    world_from_body: np.ndarray


def read_hinge_chain(mjcf_path: Path, flange_body: str) -> tuple[list[MjcfJoint], np.ndarray]:
    """Walk from the world body to `flange_body`; return its hinge joints and the flange pose at zero."""
    root = ET.parse(mjcf_path).getroot()
    worldbody = root.find("worldbody")
    if worldbody is None:
        raise ValueError(f"{mjcf_path}: no <worldbody>")
    path = _body_path(worldbody, flange_body)
    if path is None:
        raise ValueError(f"{mjcf_path}: no body named {flange_body!r}")
    pose = np.eye(4)
    joints = []
    for body in path:
        local = np.eye(4)
        local[:3, 3] = [float(v) for v in body.get("pos", "0 0 0").split()]
        local[:3, :3] = quaternion_to_matrix(np.array([float(v) for v in body.get("quat", "1 0 0 0").split()]))
        pose = pose @ local
        for joint in body.findall("joint"):
            if joint.get("type", "hinge") != "hinge":
                raise ValueError(f"{mjcf_path}: joint {joint.get('name')!r} is not a hinge")
            axis = np.array([float(v) for v in joint.get("axis", "0 0 1").split()])
            position = np.array([float(v) for v in joint.get("pos", "0 0 0").split()])
            if not np.allclose(axis, [0, 0, 1]) or not np.allclose(position, 0):
                raise ValueError(f"{mjcf_path}: joint {joint.get('name')!r} must turn about +z at the body origin")
            joints.append(MjcfJoint(str(joint.get("name")), str(body.get("name")), pose.copy()))
    return joints, pose


def _body_path(parent: ET.Element, name: str) -> list[ET.Element] | None:
    for body in parent.findall("body"):
        if body.get("name") == name:
            return [body]
        below = _body_path(body, name)
        if below is not None:
            return [body, *below]
    return None


def _closest_points(p1, z1, p2, z2):
    """Feet of the common normal of two non-parallel lines."""
    w = p1 - p2
    b = z1 @ z2
    denominator = 1.0 - b * b
    t1 = (b * (z2 @ w) - (z1 @ w)) / denominator
    t2 = ((z2 @ w) - b * (z1 @ w)) / denominator
    return p1 + t1 * z1, p2 + t2 * z2


def _signed_angle(u, v, axis):
    return float(np.arctan2(np.cross(u, v) @ axis, u @ v))


def derive_modified_dh(joints: list[MjcfJoint], world_from_flange: np.ndarray) -> dict:
    """Modified DH rows (a_{i-1}, alpha_{i-1}, d_i, theta_offset_i), plus base and tool transforms.

    Frame 1 coincides with frame 0 at zero angle (a_0 = alpha_0 = d_1 = 0); the base transform
    places frame 0 in the world. The last frame takes the previous common normal as its x axis
    (d_n = 0); the tool transform carries it onto the flange body frame.
    """
    origins = [j.world_from_body[:3, 3] for j in joints]
    axes = [j.world_from_body[:3, 2] for j in joints]
    n = len(joints)
    frame_origin: list[np.ndarray] = [np.zeros(3)] * n
    frame_x: list[np.ndarray] = [np.zeros(3)] * n
    normal_foot_on_next: list[np.ndarray] = [np.zeros(3)] * n  # where x_i meets axis i+1
    rows = [{"a": 0.0, "alpha": 0.0, "d": 0.0, "theta_offset": 0.0} for _ in range(n)]

    for i in range(n - 1):
        p1, z1, p2, z2 = origins[i], axes[i], origins[i + 1], axes[i + 1]
        if i == 0:
            anchor = p1
        else:
            anchor = normal_foot_on_next[i - 1]
        cross = np.cross(z1, z2)
        if np.linalg.norm(cross) > _TOLERANCE:
            foot1, foot2 = _closest_points(p1, z1, p2, z2)
        else:
            # Parallel axes: any common normal will do; take the one through the previous
            # normal's foot so that d_i = 0.
            foot1 = anchor
            foot2 = p2 + ((anchor - p2) @ z2) * z2
        offset = foot2 - foot1
        length = float(np.linalg.norm(offset))
        x_axis = offset / length if length > _TOLERANCE else cross / np.linalg.norm(cross)
        frame_origin[i], frame_x[i], normal_foot_on_next[i] = foot1, x_axis, foot2
        rows[i + 1]["a"] = length
        rows[i + 1]["alpha"] = _signed_angle(z1, z2, x_axis)

    frame_origin[n - 1] = normal_foot_on_next[n - 2]
    frame_x[n - 1] = frame_x[n - 2]
    for i in range(1, n):
        rows[i]["d"] = float((frame_origin[i] - normal_foot_on_next[i - 1]) @ axes[i])
        rows[i]["theta_offset"] = _signed_angle(frame_x[i - 1], frame_x[i], axes[i])

    def frame_pose(i):
        pose = np.eye(4)
        y_axis = np.cross(axes[i], frame_x[i])
        pose[:3, :3] = np.stack([frame_x[i], y_axis, axes[i]], axis=1)
        pose[:3, 3] = frame_origin[i]
        return pose

    base = frame_pose(0)
    tool = np.linalg.inv(frame_pose(n - 1)) @ world_from_flange
    return {"base": base, "tool": tool, "rows": rows, "names": [j.name for j in joints]}


def _clean(value: float) -> float:
    # Residues of 1e-17 from exact 90-degree rotations are printed as the zeros they are.
    return 0.0 if abs(value) < 1e-15 else float(value)


def _transform_yaml(pose: np.ndarray) -> dict:
    return {
        "translation": [_clean(v) for v in pose[:3, 3]],
        "rotation_wxyz": [_clean(v) for v in matrix_to_quaternion(pose[:3, :3])],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mjcf", type=Path)
    parser.add_argument("--flange", required=True, help="body whose frame is the flange")
    args = parser.parse_args(argv)
    joints, flange = read_hinge_chain(args.mjcf, args.flange)
    dh = derive_modified_dh(joints, flange)
    import yaml

    document = {
        "base": _transform_yaml(dh["base"]),
        "tool": _transform_yaml(dh["tool"]),
        "joints": [
            {"mjcf_joint": name, **{k: _clean(v) for k, v in row.items()}}
            for name, row in zip(dh["names"], dh["rows"], strict=True)
        ],
    }
    yaml.safe_dump(document, sys.stdout, sort_keys=False, default_flow_style=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
