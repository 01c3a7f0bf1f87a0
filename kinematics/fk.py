"""Batched forward kinematics of a modified-DH chain, in NumPy or torch.

One chain walk serves both array libraries. The frame is kept as three axis columns and an
origin, each laid out [3, batch] so every update is a handful of elementwise operations over the
whole batch: no loop over poses and no 4x4 matmul per pose. NumPy input is walked in blocks of
`BLOCK` poses so that the temporaries stay in cache instead of being paged in for every
operation: that, not the arithmetic, is what dominates a million poses on one core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from verify_ate.kinematics.robot import RobotModel

# A NumPy array or a torch tensor: one chain walk serves both.
Array = Any
BLOCK = 16384
# cos/sin of a DH twist within this of 0 or +-1 are taken as exact (pi/2 twists give 6e-17),
# which lets a quarter or half turn become a swap of axes instead of arithmetic.
_SNAP = 1e-15


@dataclass(frozen=True)
class Poses:
    """End-effector poses over a batch: position [..., 3] (m), rotation [..., 3, 3] (columns = axes)."""

    position: Any
    rotation: Any

    def matrix(self) -> np.ndarray:
        """[..., 4, 4] homogeneous transforms (NumPy only)."""
        position = np.asarray(self.position)
        pose = np.zeros(position.shape[:-1] + (4, 4), dtype=position.dtype)
        pose[..., :3, :3] = self.rotation
        pose[..., :3, 3] = position
        pose[..., 3, 3] = 1.0
        return pose


def _is_torch(array: Array) -> bool:
    return type(array).__module__.startswith("torch")


def _snapped(value: float) -> float:
    for exact in (0.0, 1.0, -1.0):
        if abs(value - exact) < _SNAP:
            return exact
    return value


def _rotate_pair(u: Array, v: Array, c: float, s: float) -> tuple[Array, Array]:
    """(u, v) -> (c u + s v, c v - s u) for a constant angle, without arithmetic for exact quarter turns."""
    if s == 0.0:
        return (u, v) if c == 1.0 else (-u, -v)
    if c == 0.0:
        return (v, -u) if s == 1.0 else (-v, u)
    return c * u + s * v, c * v - s * u


def _walk_chain(
    robot: RobotModel,
    angles: Array,
    constant: Callable[[Any], Array],
    cos: Callable[[Array], Array],
    sin: Callable[[Array], Array],
) -> tuple[Array, Array, Array, Array]:
    """Flange frame for joint angles [n_joints, B] (model radians); returns axes and origin, each [3, B]."""
    column = lambda values: constant(values)[:, None]  # noqa: E731 - [3] -> [3, 1] for broadcasting
    x, y, z, origin = (column(robot.base[:3, k]) for k in range(4))
    angles = angles + constant(robot.dh_theta_offset)[:, None]
    cos_q, sin_q = cos(angles), sin(angles)
    for i in range(robot.n_joints):
        alpha, a, d = robot.dh_alpha[i], robot.dh_a[i], robot.dh_d[i]
        # Rx(alpha) then Tx(a): Rx leaves x unchanged, so the translation may use either.
        y, z = _rotate_pair(y, z, _snapped(np.cos(alpha)), _snapped(np.sin(alpha)))
        if a != 0.0:
            origin = origin + a * x
        # Rz(q_i + offset) then Tz(d).
        c, s = cos_q[i], sin_q[i]
        x, y = c * x + s * y, c * y - s * x
        if d != 0.0:
            origin = origin + d * z
    axes = (x, y, z)
    tool = robot.tool
    origin = origin + sum(axes[k] * tool[k, 3] for k in range(3) if tool[k, 3] != 0.0)
    x, y, z = (sum(axes[k] * tool[k, j] for k in range(3) if tool[k, j] != 0.0) for j in range(3))
    return x, y, z, origin


def _tcp(robot: RobotModel, x: Array, y: Array, z: Array, origin: Array) -> Array:
    offset = robot.tcp_offset
    return origin + sum(axis * offset[k] for k, axis in enumerate((x, y, z)) if offset[k] != 0.0)


def _check_joint_count(robot: RobotModel, shape: tuple[int, ...]) -> None:
    if len(shape) == 0 or shape[-1] != robot.n_joints:
        raise ValueError(f"expected {robot.n_joints} joint values in the last axis, got shape {tuple(shape)}")


def forward_kinematics(robot: RobotModel, q_model: Array, frame: str = "tcp") -> Poses:
    """Poses of `frame` ("tcp" or "flange") for model-radian joints q_model [..., n_joints].

    NumPy input is computed in float64; a torch tensor keeps its dtype and device, so the same
    chain runs batched on an accelerator.
    """
    if frame not in ("tcp", "flange"):
        raise ValueError(f"frame must be 'tcp' or 'flange', not {frame!r}")
    if _is_torch(q_model):
        _check_joint_count(robot, q_model.shape)
        return _forward_kinematics_torch(robot, q_model, frame)
    q = np.asarray(q_model, dtype=np.float64)
    _check_joint_count(robot, q.shape)
    return _forward_kinematics_numpy(robot, q, frame, to_model=None)


def _forward_kinematics_numpy(
    robot: RobotModel, rows: np.ndarray, frame: str, to_model: Callable[[np.ndarray], np.ndarray] | None
) -> Poses:
    """Block-wise walk; `to_model` maps a block of dataset rows to model radians (None: already are)."""
    batch_shape = rows.shape[:-1]
    flat = rows.reshape(-1, rows.shape[-1])
    position = np.empty((len(flat), 3))
    rotation = np.empty((len(flat), 3, 3))
    for start in range(0, len(flat), BLOCK):
        stop = start + BLOCK
        block = flat[start:stop] if to_model is None else to_model(flat[start:stop])
        x, y, z, origin = _walk_chain(robot, block.T, lambda v: np.asarray(v, dtype=np.float64), np.cos, np.sin)
        if frame == "tcp":
            origin = _tcp(robot, x, y, z, origin)
        position[start:stop] = origin.T
        for k, axis in enumerate((x, y, z)):
            rotation[start:stop, :, k] = axis.T
    return Poses(position.reshape(batch_shape + (3,)), rotation.reshape(batch_shape + (3, 3)))


def _forward_kinematics_torch(robot: RobotModel, q_model: Array, frame: str) -> Poses:
    import torch

    batch_shape = tuple(q_model.shape[:-1])
    flat = q_model.reshape(-1, robot.n_joints)
    constant = lambda v: torch.as_tensor(np.asarray(v), dtype=q_model.dtype, device=q_model.device)  # noqa: E731
    x, y, z, origin = _walk_chain(robot, flat.T, constant, torch.cos, torch.sin)
    if frame == "tcp":
        origin = _tcp(robot, x, y, z, origin)
    rotation = torch.stack(
        [x.expand(3, len(flat)), y.expand(3, len(flat)), z.expand(3, len(flat))], dim=-1
    )  # [3, B, 3]
    return Poses(
        origin.expand(3, len(flat)).T.reshape(batch_shape + (3,)),
        rotation.permute(1, 0, 2).reshape(batch_shape + (3, 3)),
    )


def dataset_forward_kinematics(
    robot: RobotModel, actions: Array, units: str | None = None, frame: str = "tcp"
) -> Poses:
    """Poses for joint vectors in dataset order and units, [..., n_dataset_joints].

    NumPy rows are mapped to model radians block by block, inside the same walk.
    """
    if _is_torch(actions) or frame not in ("tcp", "flange"):
        return forward_kinematics(robot, robot.dataset_to_model(actions, units), frame=frame)
    rows = np.asarray(actions, dtype=np.float64)
    if rows.ndim == 0 or rows.shape[-1] != len(robot.dataset_joint_names):
        raise ValueError(
            f"expected {len(robot.dataset_joint_names)} dataset joint values in the last axis, got shape {rows.shape}"
        )
    return _forward_kinematics_numpy(robot, rows, frame, to_model=lambda block: robot.dataset_to_model(block, units))
