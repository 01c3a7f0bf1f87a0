"""One kinematic chain: constant transforms and joint motions, walked over any batch in NumPy or torch.

Every robot model is reduced to this one form, whatever file it came from (DH rows, an MJCF, a URDF):

    world_T_tool = base · F_1 · M_1(q_1 + o_1) · F_2 · M_2(q_2 + o_2) · ... · F_n · M_n(q_n + o_n) · tool

where each F_i is a constant transform that carries the previous frame onto joint i's frame with the joint's
axis as +z, M_i is a turn about z (revolute) or a slide along z (prismatic), and o_i a constant offset of the
joint variable (a DH theta offset, an MJCF joint's `ref`). A joint whose axis is not +z in its file becomes
F·A · Rz(q) · Aᵀ with A a constant rotation taking z onto the axis; Aᵀ is folded into the next constant.

The walk keeps the frame as three axis columns and an origin, each laid out [3, batch], so a joint is a
handful of elementwise operations over the whole batch (no 4x4 matmul per pose), and a constant transform's
entries that are exactly 0 or ±1 (quarter turns, principal axes) cost nothing. NumPy input is walked in blocks
of BLOCK poses so the temporaries stay in cache: that, not the arithmetic, dominates a million poses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

Array = Any  # a NumPy array or a torch tensor: one chain walk serves both
BLOCK = 16384
REVOLUTE, PRISMATIC = "revolute", "prismatic"
JOINT_TYPES = (REVOLUTE, PRISMATIC)
# Entries of a constant rotation within this of 0 or +-1 are taken as exact (a pi/2 turn gives 6e-17), which lets
# a quarter turn become a swap of axes instead of arithmetic.
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


@dataclass(frozen=True)
class Chain:
    """A serial chain from the world to one tool frame. Joint variables are model units: rad, or m for a slide."""

    joint_names: tuple[str, ...]
    joint_types: tuple[str, ...]
    fixed: np.ndarray  # [n, 4, 4] F_i: the frame after joint i-1's motion (after `base` for i = 0) -> joint i, axis +z
    offsets: np.ndarray  # [n] o_i, added to the joint variable
    lower: np.ndarray  # [n] limits of the joint variable
    upper: np.ndarray
    base: np.ndarray = field(default_factory=lambda: np.eye(4))  # [4, 4] world -> the chain's first frame
    tool: np.ndarray = field(default_factory=lambda: np.eye(4))  # [4, 4] last joint's moved frame -> the flange
    tcp_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # flange -> tool centre point, flange frame

    def __post_init__(self):
        n = len(self.joint_names)
        if len(self.joint_types) != n or self.fixed.shape != (n, 4, 4) or self.offsets.shape != (n,):
            raise ValueError(f"a chain of {n} joints needs {n} types, [{n}, 4, 4] constants and {n} offsets")
        unknown = sorted(set(self.joint_types) - set(JOINT_TYPES))
        if unknown:
            raise ValueError(f"joint types {unknown} are not among {list(JOINT_TYPES)}")
        if self.lower.shape != (n,) or self.upper.shape != (n,) or np.any(self.lower > self.upper):
            raise ValueError("joint limits must be [n] lower <= upper")

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)


def _snapped(value: float) -> float:
    for exact in (0.0, 1.0, -1.0):
        if abs(value - exact) < _SNAP:
            return exact
    return float(value)


def _combine(terms: list[tuple[Array, float]], start: Array | None = None) -> Array:
    """start + sum(array * weight), with no product for a weight of +-1 and no term for 0."""
    total = start
    for array, weight in terms:
        weight = _snapped(weight)
        if weight == 0.0:
            continue
        term = array if weight == 1.0 else -array if weight == -1.0 else array * weight
        total = term if total is None else total + term
    return total


def _apply(transform: np.ndarray, x: Array, y: Array, z: Array, origin: Array) -> tuple[Array, Array, Array, Array]:
    """The frame (axes x, y, z and origin, each [3, B]) followed by a constant transform."""
    axes = (x, y, z)
    moved = []
    for j in range(3):
        column = _combine([(axes[k], transform[k, j]) for k in range(3)])
        moved.append(column if column is not None else 0.0 * x)
    translation = [(axes[k], transform[k, 3]) for k in range(3) if transform[k, 3] != 0.0]
    origin = _combine(translation, origin) if translation else origin
    return moved[0], moved[1], moved[2], origin


def walk(
    chain: Chain,
    variables: Array,
    constant: Callable[[Any], Array],
    cos: Callable[[Array], Array],
    sin: Callable[[Array], Array],
    frame: str = "tcp",
) -> tuple[Array, Array, Array, Array]:
    """The `frame` ("tcp" or "flange") for joint variables [n, B]; returns axes and origin, each [3, B] (or
    [3, 1] where no joint moves them)."""
    x, y, z, origin = (constant(chain.base[:3, k])[:, None] for k in range(4))
    variables = variables + constant(chain.offsets)[:, None]
    revolute = [kind == REVOLUTE for kind in chain.joint_types]
    cos_q, sin_q = cos(variables), sin(variables)
    for i in range(chain.n_joints):
        x, y, z, origin = _apply(chain.fixed[i], x, y, z, origin)
        if revolute[i]:
            c, s = cos_q[i], sin_q[i]
            x, y = c * x + s * y, c * y - s * x
        else:
            origin = origin + variables[i] * z
    x, y, z, origin = _apply(chain.tool, x, y, z, origin)
    if frame == "tcp":
        origin = _combine([(axis, chain.tcp_offset[k]) for k, axis in enumerate((x, y, z))], origin)
    return x, y, z, origin


def chain_poses(chain: Chain, variables: Array, frame: str = "tcp", to_model: Callable | None = None) -> Poses:
    """Poses of `frame` for joint variables [..., n] (or, with `to_model`, for rows it maps to them block by
    block). NumPy is computed in float64; a torch tensor keeps its dtype and device."""
    if frame not in ("tcp", "flange"):
        raise ValueError(f"frame must be 'tcp' or 'flange', not {frame!r}")
    if type(variables).__module__.startswith("torch"):
        return _torch_poses(chain, variables if to_model is None else to_model(variables), frame)
    rows = np.asarray(variables, dtype=np.float64)
    batch_shape = rows.shape[:-1]
    flat = rows.reshape(-1, rows.shape[-1])
    position = np.empty((len(flat), 3))
    rotation = np.empty((len(flat), 3, 3))
    as_constant = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    if to_model is None:
        _check_count(chain, rows.shape)
    for start in range(0, len(flat), BLOCK):
        block = flat[start : start + BLOCK] if to_model is None else to_model(flat[start : start + BLOCK])
        x, y, z, origin = walk(chain, block.T, as_constant, np.cos, np.sin, frame)
        stop = start + len(block)
        position[start:stop] = np.broadcast_to(origin, (3, len(block))).T
        for k, axis in enumerate((x, y, z)):
            rotation[start:stop, :, k] = np.broadcast_to(axis, (3, len(block))).T
    return Poses(position.reshape(batch_shape + (3,)), rotation.reshape(batch_shape + (3, 3)))


def _check_count(chain: Chain, shape: tuple[int, ...]) -> None:
    if len(shape) == 0 or shape[-1] != chain.n_joints:
        raise ValueError(f"expected {chain.n_joints} joint values in the last axis, got shape {tuple(shape)}")


def _torch_poses(chain: Chain, variables: Array, frame: str) -> Poses:
    import torch

    _check_count(chain, tuple(variables.shape))
    batch_shape = tuple(variables.shape[:-1])
    flat = variables.reshape(-1, chain.n_joints)
    constant = lambda v: torch.as_tensor(np.asarray(v), dtype=variables.dtype, device=variables.device)  # noqa: E731
    x, y, z, origin = walk(chain, flat.T, constant, torch.cos, torch.sin, frame)
    count = len(flat)
    rotation = torch.stack([x.expand(3, count), y.expand(3, count), z.expand(3, count)], dim=-1)  # [3, B, 3]
    return Poses(
        origin.expand(3, count).T.reshape(batch_shape + (3,)),
        rotation.permute(1, 0, 2).reshape(batch_shape + (3, 3)),
    )


# Building chains ------------------------------------------------------------------------------------------------


def translation(vector: ArrayLike) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = np.asarray(vector, dtype=np.float64)
    return pose


def rotation_about(axis: str, angle: float) -> np.ndarray:
    """A 4x4 turn about a principal axis ("x", "y" or "z")."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    pose = np.eye(4)
    pose[i, i], pose[i, j], pose[j, i], pose[j, j] = c, -s, s, c
    return pose


def axis_alignment(axis: ArrayLike) -> np.ndarray:
    """A 4x4 rotation whose z column is the unit `axis`: a signed permutation for a principal axis, so that the
    walk keeps its free swaps."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    pose = np.eye(4)
    principal = int(np.argmax(np.abs(a)))
    if abs(abs(a[principal]) - 1.0) < 1e-15:
        sign = float(np.sign(a[principal]))
        # z -> sign * e_p; x, y the other two principal axes, keeping a right-handed frame.
        others = [(principal + 1) % 3, (principal + 2) % 3]
        pose[:3, :3] = 0.0
        pose[others[0], 0] = 1.0
        pose[others[1], 1] = sign
        pose[principal, 2] = sign
        return pose
    helper = np.eye(3)[int(np.argmin(np.abs(a)))]
    x = np.cross(helper, a)
    x /= np.linalg.norm(x)
    pose[:3, :3] = np.stack([x, np.cross(a, x), a], axis=1)
    return pose


@dataclass
class ChainBuilder:
    """Collects a path's constant transforms and joints in order: `fixed(T)` for a constant step, `joint(...)`
    for a joint about `axis` through the current frame's `pivot`. `build()` folds the constants between
    joints into the F_i of the chain."""

    pending: np.ndarray = field(default_factory=lambda: np.eye(4))
    names: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    constants: list[np.ndarray] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)

    def fixed(self, transform: np.ndarray) -> None:
        self.pending = self.pending @ transform

    def joint(
        self,
        name: str,
        kind: str,
        axis: ArrayLike,
        pivot: ArrayLike = (0.0, 0.0, 0.0),
        offset: float = 0.0,
        limits: Sequence[float] | None = None,
    ) -> None:
        alignment = axis_alignment(axis)
        self.constants.append(self.pending @ translation(pivot) @ alignment)
        self.pending = alignment.T @ translation(-np.asarray(pivot, dtype=np.float64))
        self.names.append(name)
        self.types.append(kind)
        self.offsets.append(float(offset))
        low, high = (limits[0], limits[1]) if limits is not None else (-np.pi, np.pi)
        self.lower.append(float(low))
        self.upper.append(float(high))

    def build(self, base: np.ndarray | None = None, tcp_offset: ArrayLike = (0.0, 0.0, 0.0)) -> Chain:
        if not self.names:
            raise ValueError("the path to the tool frame has no joint")
        first = self.constants[0]
        return Chain(
            joint_names=tuple(self.names),
            joint_types=tuple(self.types),
            fixed=np.stack([np.eye(4), *self.constants[1:]]) if base is None else np.stack(self.constants),
            offsets=np.asarray(self.offsets, dtype=np.float64),
            lower=np.asarray(self.lower, dtype=np.float64),
            upper=np.asarray(self.upper, dtype=np.float64),
            base=first if base is None else base,
            tool=self.pending.copy(),
            tcp_offset=np.asarray(tcp_offset, dtype=np.float64),
        )
