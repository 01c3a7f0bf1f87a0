"""Chains read from a robot's own model file, URDF or MJCF, with nothing but the standard XML reader.

Only the kinematic skeleton is read: link and body frames, joint axes, pivots, limits and reference positions,
sites. The path from the root to the requested tool frame becomes one `Chain`; branches off that path (the
other arm, the fingers) play no part. What these readers do not understand (a ball or free joint on the path,
an `<include>`) is refused by name rather than guessed. tests/test_robot_models.py checks every committed model
against MuJoCo (and the URDFs against pinocchio) to 1e-9 over 10,000 configurations; bench/bench_fk_ate.py
measures the reading and the walk against those libraries (docs/robots.md says why they are not the reader).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from verify_ate.kinematics.chain import PRISMATIC, REVOLUTE, Chain, ChainBuilder, rotation_about, translation
from verify_ate.kinematics.rotations import quaternion_to_matrix


class ModelFileError(ValueError):
    """A robot model file that cannot be read as a chain to the requested frame."""


def _numbers(text: str | None, count: int, what: str) -> np.ndarray:
    values = np.array([float(v) for v in (text or "").split()], dtype=np.float64)
    if values.shape != (count,):
        raise ModelFileError(f"{what} needs {count} numbers, got {text!r}")
    return values


def read_chain(path: Path, tool: str, tcp_offset: ArrayLike = (0.0, 0.0, 0.0)) -> Chain:
    """The chain from the model's root to `tool` (a URDF link, or an MJCF body or site)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise ModelFileError(f"{path}: cannot read the model file ({error})") from None
    try:
        if root.tag == "robot":
            builder = _urdf_path(root, tool)
        elif root.tag == "mujoco":
            builder = _MjcfReader(root).path(tool)
        else:
            raise ModelFileError(f"the root element is <{root.tag}>, neither <robot> (URDF) nor <mujoco> (MJCF)")
        return builder.build(tcp_offset=tcp_offset)
    except (ModelFileError, ValueError) as error:
        raise ModelFileError(f"{path}: {error}") from None


# URDF --------------------------------------------------------------------------------------------------------


def rpy_matrix(rpy: ArrayLike) -> np.ndarray:
    """URDF's fixed-axis roll, pitch, yaw: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    roll, pitch, yaw = (float(v) for v in np.asarray(rpy, dtype=np.float64))
    return rotation_about("z", yaw) @ rotation_about("y", pitch) @ rotation_about("x", roll)


def _urdf_path(robot: ET.Element, tool_link: str) -> ChainBuilder:
    links = {link.get("name") for link in robot.findall("link")}
    if tool_link not in links:
        raise ModelFileError(f"no link named {tool_link!r}")
    by_child = {}
    for joint in robot.findall("joint"):
        child = joint.find("child")
        if child is not None:
            by_child[child.get("link")] = joint
    path = []
    link: str | None = tool_link
    while link in by_child:
        path.append(by_child[link])
        parent = by_child[link].find("parent")
        link = parent.get("link") if parent is not None else None
    builder = ChainBuilder()
    for joint in reversed(path):
        name, kind = str(joint.get("name")), joint.get("type")
        origin = joint.find("origin")
        xyz = _numbers(origin.get("xyz", "0 0 0"), 3, f"joint {name} origin xyz") if origin is not None else np.zeros(3)
        rpy = _numbers(origin.get("rpy", "0 0 0"), 3, f"joint {name} origin rpy") if origin is not None else np.zeros(3)
        builder.fixed(translation(xyz) @ rpy_matrix(rpy))
        if kind == "fixed":
            continue
        if kind not in ("revolute", "continuous", "prismatic"):
            raise ModelFileError(f"joint {name!r} on the path to {tool_link!r} is of type {kind!r}")
        axis_element = joint.find("axis")
        axis = _numbers(axis_element.get("xyz"), 3, f"joint {name} axis") if axis_element is not None else [1, 0, 0]
        limit = joint.find("limit")
        limits = None
        if kind != "continuous" and limit is not None and limit.get("lower") is not None:
            limits = (float(limit.get("lower", 0.0)), float(limit.get("upper", 0.0)))
        builder.joint(name, PRISMATIC if kind == "prismatic" else REVOLUTE, axis, limits=limits)
    return builder


# MJCF --------------------------------------------------------------------------------------------------------

_ORIENTATIONS = ("quat", "axisangle", "euler", "xyaxes", "zaxis")


class _MjcfReader:
    """MJCF's frame rules: compiler angle units and Euler sequence, default classes and childclass."""

    def __init__(self, root: ET.Element):
        if root.find(".//include") is not None:
            raise ModelFileError("<include> is not read: give a flattened model file")
        compiler = root.find("compiler")
        attributes = compiler.attrib if compiler is not None else {}
        self.degrees = attributes.get("angle", "degree") == "degree"
        self.eulerseq = attributes.get("eulerseq", "xyz")
        self.defaults: dict[str, dict[str, dict[str, str]]] = {}
        for default in root.findall("default"):
            self._read_defaults(default, {})
        worldbody = root.find("worldbody")
        if worldbody is None:
            raise ModelFileError("no <worldbody>")
        self.worldbody = worldbody

    def _read_defaults(self, element: ET.Element, inherited: dict[str, dict[str, str]]) -> None:
        own = {tag: dict(attributes) for tag, attributes in inherited.items()}
        for child in element:
            if child.tag != "default":
                own[child.tag] = {**own.get(child.tag, {}), **child.attrib}
        self.defaults[element.get("class", "main")] = own
        for child in element.findall("default"):
            self._read_defaults(child, own)

    def _attributes(self, element: ET.Element, childclass: str) -> dict[str, str]:
        name = element.get("class", childclass)
        if name not in self.defaults and name != "main":
            raise ModelFileError(f"<{element.tag} {element.get('name', '')}> names unknown class {name!r}")
        return {**self.defaults.get(name, {}).get(element.tag, {}), **element.attrib}

    def _angle(self, value: float) -> float:
        return math.radians(value) if self.degrees else value

    def _frame(self, attributes: dict[str, str], what: str) -> np.ndarray:
        """The pose an element's pos and orientation attributes give, in its parent's frame."""
        pose = translation(_numbers(attributes.get("pos", "0 0 0"), 3, f"{what} pos"))
        given = [key for key in _ORIENTATIONS if key in attributes]
        if len(given) > 1:
            raise ModelFileError(f"{what} gives more than one orientation ({', '.join(given)})")
        if not given:
            return pose
        key, text = given[0], attributes[given[0]]
        rotation = np.eye(4)
        if key == "quat":
            rotation[:3, :3] = quaternion_to_matrix(_numbers(text, 4, f"{what} quat"))
        elif key == "axisangle":
            values = _numbers(text, 4, f"{what} axisangle")
            axis = values[:3] / np.linalg.norm(values[:3])
            angle = self._angle(values[3])
            half = angle / 2
            rotation[:3, :3] = quaternion_to_matrix(np.array([math.cos(half), *(math.sin(half) * axis)]))
        elif key == "euler":
            angles = [self._angle(v) for v in _numbers(text, 3, f"{what} euler")]
            for axis_name, angle in zip(self.eulerseq, angles, strict=True):
                turn = rotation_about(axis_name.lower(), angle)
                # lower case: axes that move with the frame (intrinsic); upper case: the parent's axes
                rotation = rotation @ turn if axis_name.islower() else turn @ rotation
        elif key == "xyaxes":
            values = _numbers(text, 6, f"{what} xyaxes")
            x = values[:3] / np.linalg.norm(values[:3])
            y = values[3:] - (values[3:] @ x) * x
            y /= np.linalg.norm(y)
            rotation[:3, :3] = np.stack([x, y, np.cross(x, y)], axis=1)
        else:  # zaxis: the shortest turn taking +z onto the given axis
            z = _numbers(text, 3, f"{what} zaxis")
            z = z / np.linalg.norm(z)
            axis = np.cross([0.0, 0.0, 1.0], z)
            sine, cosine = np.linalg.norm(axis), z[2]
            if sine > 1e-15:
                half = math.atan2(sine, cosine) / 2
                rotation[:3, :3] = quaternion_to_matrix(np.array([math.cos(half), *(math.sin(half) * axis / sine)]))
            elif cosine < 0:
                rotation[:3, :3] = np.diag([1.0, -1.0, -1.0])
        return pose @ rotation

    def path(self, tool: str) -> ChainBuilder:
        """Builder steps from the world to the body or site named `tool`."""
        found = self._find(self.worldbody, tool, [], "main")
        if found is None:
            raise ModelFileError(f"no body or site named {tool!r}")
        builder = ChainBuilder()
        for element, childclass in found:
            attributes = self._attributes(element, childclass) if element.tag == "site" else element.attrib
            builder.fixed(self._frame(attributes, f"<{element.tag} {element.get('name', '')}>"))
            if element.tag != "body":
                continue
            own_class = element.get("childclass", childclass)
            for joint in element:
                if joint.tag == "freejoint":
                    raise ModelFileError(f"body {element.get('name')!r} on the path has a free joint")
                if joint.tag == "joint":
                    self._joint(builder, self._attributes(joint, own_class), element.get("name", ""))
        return builder

    def _find(self, parent: ET.Element, tool: str, above: list, childclass: str) -> list | None:
        """[(element, the childclass in force at it)] from below `parent` down to the tool, or None."""
        for child in parent:
            if child.tag not in ("body", "frame", "site"):
                continue
            here = [*above, (child, childclass)]
            if child.get("name") == tool and child.tag in ("body", "site"):
                return here
            if child.tag != "site":
                below = self._find(child, tool, here, child.get("childclass", childclass))
                if below is not None:
                    return below
        return None

    def _joint(self, builder: ChainBuilder, attributes: dict[str, str], body: str) -> None:
        name = attributes.get("name", f"{body} joint")
        kind = attributes.get("type", "hinge")
        if kind not in ("hinge", "slide"):
            raise ModelFileError(f"joint {name!r} on the path is of type {kind!r}")
        hinge = kind == "hinge"
        limits = None
        if "range" in attributes and attributes.get("limited", "auto") != "false":
            low, high = _numbers(attributes["range"], 2, f"joint {name} range")
            limits = (self._angle(low), self._angle(high)) if hinge else (low, high)
        reference = float(attributes.get("ref", 0.0))
        builder.joint(
            name,
            REVOLUTE if hinge else PRISMATIC,
            _numbers(attributes.get("axis", "0 0 1"), 3, f"joint {name} axis"),
            pivot=_numbers(attributes.get("pos", "0 0 0"), 3, f"joint {name} pos"),
            offset=-(self._angle(reference) if hinge else reference),
            limits=limits,
        )
