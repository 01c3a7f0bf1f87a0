"""Rotation helpers over arrays of any leading shape (NumPy float64 unless told otherwise).

Quaternions are (w, x, y, z), Hamilton convention, as MuJoCo and the robot configs write them.
"""

from __future__ import annotations

import numpy as np


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """[..., 4] (w, x, y, z), normalised first as MuJoCo does -> [..., 3, 3]."""
    q = np.asarray(quaternion, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 4] (w, x, y, z) with w >= 0.

    Shepperd's method: each sample uses the largest of the four squared components as the
    pivot, so no branch divides by a value near zero (stable near 180-degree rotations).
    """
    r = np.asarray(rotation, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    trace = m00 + m11 + m22
    candidates = np.stack([trace, m00, m11, m22], axis=-1)
    pivot = np.argmax(candidates, axis=-1)

    s_w = np.sqrt(np.maximum(1.0 + trace, 0.0)) * 2
    s_x = np.sqrt(np.maximum(1.0 + m00 - m11 - m22, 0.0)) * 2
    s_y = np.sqrt(np.maximum(1.0 - m00 + m11 - m22, 0.0)) * 2
    s_z = np.sqrt(np.maximum(1.0 - m00 - m11 + m22, 0.0)) * 2
    d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    a21, a02, a10 = r[..., 2, 1] + r[..., 1, 2], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 0] + r[..., 0, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        by_w = np.stack([s_w / 4, d21 / s_w, d02 / s_w, d10 / s_w], axis=-1)
        by_x = np.stack([d21 / s_x, s_x / 4, a10 / s_x, a02 / s_x], axis=-1)
        by_y = np.stack([d02 / s_y, a10 / s_y, s_y / 4, a21 / s_y], axis=-1)
        by_z = np.stack([d10 / s_z, a02 / s_z, a21 / s_z, s_z / 4], axis=-1)
    stacked = np.stack([by_w, by_x, by_y, by_z], axis=-2)
    quaternion = np.take_along_axis(stacked, pivot[..., None, None], axis=-2)[..., 0, :]
    quaternion = np.where(quaternion[..., :1] < 0, -quaternion, quaternion)
    return quaternion / np.linalg.norm(quaternion, axis=-1, keepdims=True)


def matrix_to_rpy(rotation: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 3] roll, pitch, yaw (rad) with R = Rz(yaw) Ry(pitch) Rx(roll), the Ascend guide's
    pose convention. Pitch lies in [-pi/2, pi/2]; at +-pi/2 (gimbal lock) roll and yaw are not unique."""
    r = np.asarray(rotation, dtype=np.float64)
    roll = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    pitch = np.arctan2(-r[..., 2, 0], np.hypot(r[..., 2, 1], r[..., 2, 2]))
    yaw = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([roll, pitch, yaw], axis=-1)


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped into [-pi, pi)."""
    return (np.asarray(angle, dtype=np.float64) + np.pi) % (2 * np.pi) - np.pi


def geodesic_angle(rotation_a: np.ndarray, rotation_b: np.ndarray, block: int = 16384) -> np.ndarray:
    """Angle in [0, pi] of R_a^T R_b, over [..., 3, 3] pairs.

    With a_i, b_i the columns of R_a, R_b: cos = (sum_i a_i.b_i - 1) / 2 and
    sin = |sum_i a_i x b_i| / 2 (the axis part of R_a^T R_b, seen in the world frame).
    atan2(sin, cos) rather than arccos(cos): arccos loses half the digits near 0 and pi, atan2
    keeps the absolute error at machine precision over the whole range. Computed in blocks so
    that the temporaries stay in cache.
    """
    a = np.asarray(rotation_a, dtype=np.float64)
    b = np.asarray(rotation_b, dtype=np.float64)
    shape = np.broadcast_shapes(a.shape, b.shape)
    a = np.broadcast_to(a, shape).reshape(-1, 3, 3)
    b = np.broadcast_to(b, shape).reshape(-1, 3, 3)
    angles = np.empty(len(a))
    for start in range(0, len(a), block):
        angles[start : start + block] = _geodesic_block(a[start : start + block], b[start : start + block])
    return angles.reshape(shape[:-2])


def _geodesic_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos_angle = (np.einsum("nij,nij->n", a, b) - 1.0) / 2.0
    axis = np.zeros((3, len(a)))
    for i in range(3):
        ax, ay, az = a[:, 0, i], a[:, 1, i], a[:, 2, i]
        bx, by, bz = b[:, 0, i], b[:, 1, i], b[:, 2, i]
        axis[0] += ay * bz - az * by
        axis[1] += az * bx - ax * bz
        axis[2] += ax * by - ay * bx
    sin_angle = np.sqrt(np.einsum("kn,kn->n", axis, axis)) / 2.0
    return np.arctan2(sin_angle, cos_angle)


def axis_angle_to_matrix(rotation_vector: np.ndarray) -> np.ndarray:
    """[..., 3] rotation vectors (axis times angle, rad) -> [..., 3, 3], by Rodrigues' formula; exact at zero."""
    v = np.asarray(rotation_vector, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        axis = np.where(angle[..., None] > 0, v / angle[..., None], 0.0)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    c, s = np.cos(angle), np.sin(angle)
    one_c = 1.0 - c
    rows = [
        [c + x * x * one_c, x * y * one_c - z * s, x * z * one_c + y * s],
        [y * x * one_c + z * s, c + y * y * one_c, y * z * one_c - x * s],
        [z * x * one_c - y * s, z * y * one_c + x * s, c + z * z * one_c],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def rot6d_to_matrix(six: np.ndarray) -> np.ndarray:
    """[..., 6], the first two columns of a rotation (Zhou et al. 2019), -> [..., 3, 3] by Gram-Schmidt."""
    values = np.asarray(six, dtype=np.float64)
    first, second = values[..., :3], values[..., 3:]
    x = first / np.linalg.norm(first, axis=-1, keepdims=True)
    y = second - np.sum(x * second, axis=-1, keepdims=True) * x
    y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    return np.stack([x, y, np.cross(x, y)], axis=-1)
