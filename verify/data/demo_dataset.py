"""Small LeRobot v3.0 demo datasets, one per robot, written by lerobot's own writer, for the demo and the tests.

The recorded datasets (koch_test for Koch, the SO-101 and ALOHA recordings) live on the hub, which these
machines cannot reach. This writes the same layout (the robot's robot_type, fps, cameras as mp4 videos,
state/action in the robot's dataset units and joint order) with smooth in-limit joint motion of every arm
and images drawn from each arm's tool centre point, so frames differ from one another and the policy's
inputs depend on the state. Everything it draws from is in a profile: configs/profiles/demo_dataset.yaml
(Koch v1.1, the default), demo_dataset_<robot>.yaml for the others.

Video encoding runs in PyAV's bundled FFmpeg (libsvtav1), so no system ffmpeg is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verify_ate.kinematics import arm_poses, load_robot
from verify_ate.kinematics.robot import Arm, RobotConfigError, RobotModel, strip_position_suffix
from verify_ate.verify.cache import default_cache_dir
from verify_ate.verify.configs import CONFIGS_DIR, read_yaml
from verify_ate.verify.errors import InputError

DEFAULT_PROFILE = CONFIGS_DIR / "profiles" / "demo_dataset.yaml"
# Bump when the generated content changes for the same profile, so cached copies are rebuilt.
GENERATOR_VERSION = 1
# A profile without `name` or `label` is the Koch demo's, which predates both keys (its cache key hashes the YAML).
DATASET_NAME = "koch_demo"  # the dataset's folder name
VIEWS = ("top", "side", "front")
# A profile without `gripper_open` draws the gripper fully open at 45 (Koch degrees).
_KOCH_GRIPPER_OPEN = 45.0
# Half width of an arm's pedestal in the side and front views, metres.
_PEDESTAL_HALF_WIDTH_M = 0.02
_STALE_PARTIAL_S = 3600.0


@dataclass(frozen=True)
class JointMotion:
    """One dataset joint's motion, in the robot's dataset units (degrees or radians)."""

    centre: float
    amplitude: float
    cycles: float


Point = tuple[float, float]
Window = tuple[Point, Point]  # (horizontal min, max), (vertical min, max), metres


@dataclass(frozen=True)
class Scene:
    """What the cameras see, in metres of the robot model's world frame (+z up, the table at z = 0).

    Views: "top" looks down (x right, y up), "side" looks along -x (y right, z up), "front" looks along +y
    (x right, z up). `anchors`: per arm and view, where its pedestal stands (top: its centre; side and
    front: its centre and its top) and where the drawn arm leaves it for the tool centre point."""

    windows: dict[str, Window]
    reach_height: float  # z at which the top view draws the tool centre point's disc largest
    block_xy: Point
    bin_xy: Point
    anchors: tuple[dict[str, tuple[Point, Point]], ...]  # per arm: view -> (pedestal, shoulder)


# The Koch demo's scene, as GENERATOR_VERSION 1 drew it: a profile without `scene` gets it unchanged.
_KOCH_SCENE = Scene(
    windows={"top": ((-0.15, 0.15), (-0.02, 0.26)), "side": ((-0.05, 0.3), (-0.03, 0.25))},
    reach_height=0.25,
    block_xy=(-0.07, 0.17),
    bin_xy=(0.09, 0.15),
    anchors=(
        {
            "top": ((0.0, 0.0), (0.0, 0.0)),
            "side": ((0.0, 0.052), (0.033, 0.052)),
            "front": ((0.0, 0.052), (0.0, 0.052)),
        },
    ),
)


@dataclass(frozen=True)
class DemoProfile:
    robot: str
    robot_type: str
    name: str  # the dataset's folder name in the cache, before the key
    label: str  # what the demo's note calls the robot ("Koch", "SO-101")
    fps: int
    task: str
    seed: int
    episodes: int
    frames_per_episode: int
    height: int
    width: int
    cameras: dict[str, str]  # feature key -> view ("top" | "side" | "front")
    action_lead_frames: int
    amplitude_scale: tuple[float, float]
    joints: dict[str, JointMotion]  # dataset feature names (as written), in dataset order
    units: str  # the robot's dataset units: "deg" or "rad"
    gripper_open: float  # a gripper value (dataset units) drawn fully open
    scene: Scene
    document: dict  # the YAML as loaded: the cache key hashes it
    source: str


def load_demo_profile(profile: str | Path | dict | DemoProfile | None = None) -> DemoProfile:
    """A demo dataset profile from a YAML file (default configs/profiles/demo_dataset.yaml) or a dict."""
    if isinstance(profile, DemoProfile):
        return profile
    if isinstance(profile, dict):
        document, source = profile, "<profile dict>"
    else:
        path = Path(profile) if profile is not None else DEFAULT_PROFILE
        source = str(path)
        document = read_yaml(path, "demo dataset profile")
    try:
        return _parse_profile(document, source)
    except RobotConfigError as error:
        raise InputError(f"{source}: {error}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        detail = f"missing key {error}" if isinstance(error, KeyError) else str(error)
        raise InputError(f"{source}: invalid demo dataset profile: {detail}") from None


def _positive_int(document: dict, key: str) -> int:
    value = document[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive integer, not {value!r}")
    return value


def _joint_motion(name: str, spec: dict, units: str) -> JointMotion:
    """`centre`/`amplitude` in the robot's units; Koch's profile says `centre_deg`/`amplitude_deg`."""
    if "centre" in spec or "amplitude" in spec:
        centre, amplitude = spec["centre"], spec["amplitude"]
    elif units == "deg" and ("centre_deg" in spec or "amplitude_deg" in spec):
        centre, amplitude = spec["centre_deg"], spec["amplitude_deg"]
    else:
        raise ValueError(f"joint {name}: give centre and amplitude in the robot's dataset units ({units})")
    return JointMotion(float(centre), float(amplitude), float(spec["cycles"]))


def _pair(values) -> Point:
    first, second = (float(v) for v in values)
    return first, second


def _window(values, view: str) -> Window:
    horizontal, vertical = _pair(values[0]), _pair(values[1])
    if not (horizontal[0] < horizontal[1] and vertical[0] < vertical[1]):
        raise ValueError(f"scene {view}: each range must be [min, max] with min < max, got {values}")
    return horizontal, vertical


def _parse_scene(document: dict | None, robot: RobotModel, views: set[str]) -> Scene:
    """The profile's `scene`, anchored on each arm's chain base; absent: the Koch demo's scene."""
    if document is None:
        if len(robot.arms) != 1:
            raise ValueError(f"robot {robot.name} has {len(robot.arms)} arms: the profile needs a scene")
        scene = _KOCH_SCENE
    else:
        windows = {view: _window(document[view], view) for view in VIEWS if view in document}
        anchors = []
        for arm in robot.arms:
            x, y, z = (float(v) for v in arm.chain.base[:3, 3])  # type: ignore[union-attr]
            anchors.append({"top": ((x, y), (x, y)), "side": ((y, z), (y, z)), "front": ((x, z), (x, z))})
        reach = float(document["reach_height"])
        if not reach > 0:
            raise ValueError(f"scene reach_height must be positive, not {reach}")
        scene = Scene(windows, reach, _pair(document["block_xy"]), _pair(document["bin_xy"]), tuple(anchors))
    missing = sorted(views - set(scene.windows))
    if missing:
        raise ValueError(f"scene: no window for the view(s) {missing} a camera uses")
    return scene


def _parse_profile(document: dict, source: str) -> DemoProfile:
    if not isinstance(document, dict):
        raise ValueError("the file must hold a mapping")
    robot = load_robot(str(document["robot"]))
    if any(arm.chain is None for arm in robot.arms):
        raise ValueError(f"robot {robot.name}: its actions are end-effector poses; the demo moves joint chains")
    if robot.dataset_units not in ("deg", "rad"):
        raise ValueError(f"robot {robot.name}: dataset units {robot.dataset_units!r}; the demo writes deg or rad")
    image = document["image"]
    cameras = {str(key): str(view) for key, view in document["cameras"].items()}
    for key, view in cameras.items():
        if not key.startswith("observation.images."):
            raise ValueError(f"camera {key!r} must be named observation.images.<name>")
        if view not in VIEWS:
            raise ValueError(f"camera {key!r}: view must be one of {VIEWS}, not {view!r}")
    joints_doc = document["joints"]
    names = [str(name) for name in joints_doc]
    if robot.dataset_name_prefix(names) != "":
        raise ValueError(
            f"joints must be {list(robot.dataset_joint_names)} in that order (robot {robot.name}; lerobot's "
            f"'.pos' suffixes allowed), got {names}"
        )
    joints = {name: _joint_motion(name, spec, robot.dataset_units) for name, spec in joints_doc.items()}
    low, high = (float(v) for v in document["amplitude_scale"])
    if not 0 < low <= high <= 1:
        raise ValueError(f"amplitude_scale must satisfy 0 < low <= high <= 1, got {[low, high]}")
    lead = document["action_lead_frames"]
    if isinstance(lead, bool) or not isinstance(lead, int) or lead < 0:
        raise ValueError(f"action_lead_frames must be a non-negative integer, not {lead!r}")
    gripper_open = float(document.get("gripper_open", _KOCH_GRIPPER_OPEN))
    if not gripper_open > 0:
        raise ValueError(f"gripper_open must be positive, not {gripper_open}")
    profile = DemoProfile(
        robot=robot.name,
        robot_type=str(document["robot_type"]),
        name=str(document.get("name", DATASET_NAME)),
        label=str(document.get("label", "Koch")),
        fps=_positive_int(document, "fps"),
        task=str(document["task"]),
        seed=int(document["seed"]),
        episodes=_positive_int(document, "episodes"),
        frames_per_episode=_positive_int(document, "frames_per_episode"),
        height=_positive_int(image, "height"),
        width=_positive_int(image, "width"),
        cameras=cameras,
        action_lead_frames=lead,
        amplitude_scale=(low, high),
        joints=joints,
        units=robot.dataset_units,
        gripper_open=gripper_open,
        scene=_parse_scene(document.get("scene"), robot, set(cameras.values())),
        document=document,
        source=source,
    )
    if not profile.name or "/" in profile.name or profile.name.startswith("."):
        raise ValueError(f"name must be a plain folder name, not {profile.name!r}")
    _check_envelope_in_limits(profile, robot)
    _check_above_the_table(profile, robot)
    return profile


def _check_envelope_in_limits(profile: DemoProfile, robot: RobotModel) -> None:
    """Every arm's kinematic joints' centre +- amplitude must map inside that arm's chain limits."""
    centre = np.array([m.centre for m in profile.joints.values()])
    amplitude = np.array([m.amplitude for m in profile.joints.values()])
    unit = "deg" if profile.units == "deg" else "rad"
    for arm in robot.arms:
        chain = arm.chain
        assert chain is not None  # _parse_profile refused chainless robots
        ends = robot.dataset_to_model(np.stack([centre - amplitude, centre + amplitude]), units=profile.units, arm=arm)
        low, high = ends.min(axis=0), ends.max(axis=0)
        for i, name in enumerate(arm.dataset_joints):
            if low[i] < chain.lower[i] or high[i] > chain.upper[i]:
                where = f"arm {arm.name} " if len(robot.arms) > 1 else ""
                raise ValueError(
                    f"{where}joint {name}: centre +- amplitude ({unit}) reaches model angles "
                    f"[{np.degrees(low[i]):.1f}, {np.degrees(high[i]):.1f}] deg, outside the limits "
                    f"[{np.degrees(chain.lower[i]):.1f}, {np.degrees(chain.upper[i]):.1f}] deg of {robot.source}"
                )


def _check_above_the_table(profile: DemoProfile, robot: RobotModel) -> None:
    """Every arm's tool centre point must stay above the table (z > 0) over every episode's motion."""
    for episode in range(profile.episodes):
        state, _ = episode_joint_motion(profile, episode)
        for arm, poses in arm_poses(robot, state.astype(np.float64), units=profile.units).items():
            lowest = float(np.asarray(poses.position)[:, 2].min())
            if lowest <= 0.0:
                raise ValueError(
                    f"episode {episode}: arm {arm}'s tool centre point goes {-lowest * 1000:.0f} mm under the table "
                    f"(z = {lowest:.3f} m); move the joints' centres or shrink their amplitudes"
                )


def profile_cache_key(profile: DemoProfile) -> str:
    """Short hash of the profile, the lerobot version and the generator version."""
    import lerobot

    identity = {"profile": profile.document, "lerobot": lerobot.__version__, "generator": GENERATOR_VERSION}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def policy_features(profile: DemoProfile) -> dict:
    """The `features` section a pi0 profile (configs/profiles/tiny_pi0.yaml) needs for this dataset: every
    camera [3, H, W] and the state and action widths."""
    return {
        "cameras": {key: [3, profile.height, profile.width] for key in profile.cameras},
        "state_dim": len(profile.joints),
        "action_dim": len(profile.joints),
    }


# ── joint motion and images ───────────────────────────────────────────────────────────────────────


def episode_joint_motion(profile: DemoProfile, episode: int) -> tuple[np.ndarray, np.ndarray]:
    """(state, action) of one episode, each [frames, J] float32 in the robot's dataset units."""
    rng = np.random.default_rng([profile.seed, episode])
    motions = list(profile.joints.values())
    phase = rng.uniform(0.0, 2 * np.pi, size=len(motions))
    scale = rng.uniform(*profile.amplitude_scale)
    steps = profile.frames_per_episode + profile.action_lead_frames
    t = np.arange(steps)[:, None] / profile.frames_per_episode
    centre = np.array([m.centre for m in motions])
    amplitude = np.array([m.amplitude for m in motions])
    cycles = np.array([m.cycles for m in motions])
    q = centre + scale * amplitude * np.sin(2 * np.pi * cycles * t + phase)
    state = q[: profile.frames_per_episode]
    action = q[profile.action_lead_frames : profile.action_lead_frames + profile.frames_per_episode]
    return state.astype(np.float32), action.astype(np.float32)


class _Canvas:
    """An RGB image with a metric window onto one plane of the scene; draws with NumPy masks."""

    def __init__(self, height: int, width: int, horizontal: tuple[float, float], vertical: tuple[float, float]):
        self.pixels = np.zeros((height, width, 3), dtype=np.uint8)
        self.horizontal, self.vertical = horizontal, vertical
        self.rows, self.cols = np.ogrid[:height, :width]

    def to_pixel(self, u: float, v: float) -> tuple[float, float]:
        """Metric (u right, v up) -> (row, col)."""
        height, width = self.pixels.shape[:2]
        col = (u - self.horizontal[0]) / (self.horizontal[1] - self.horizontal[0]) * (width - 1)
        row = (self.vertical[1] - v) / (self.vertical[1] - self.vertical[0]) * (height - 1)
        return row, col

    def fill(self, colour):
        self.pixels[:] = colour

    def rectangle(self, u0, v0, u1, v1, colour):
        r0, c0 = self.to_pixel(u0, v1)
        r1, c1 = self.to_pixel(u1, v0)
        mask = (self.rows >= r0) & (self.rows <= r1) & (self.cols >= c0) & (self.cols <= c1)
        self.pixels[mask] = colour

    def disc(self, u, v, radius_px, colour):
        row, col = self.to_pixel(u, v)
        self.pixels[(self.rows - row) ** 2 + (self.cols - col) ** 2 <= radius_px**2] = colour

    def segment(self, start, end, colour, thickness_px=1.0):
        r0, c0 = self.to_pixel(*start)
        r1, c1 = self.to_pixel(*end)
        # Distance of every pixel to the segment: a thick line without a per-pixel loop.
        dr, dc = r1 - r0, c1 - c0
        length2 = max(dr * dr + dc * dc, 1e-9)
        along = np.clip(((self.rows - r0) * dr + (self.cols - c0) * dc) / length2, 0.0, 1.0)
        distance2 = (self.rows - (r0 + along * dr)) ** 2 + (self.cols - (c0 + along * dc)) ** 2
        self.pixels[distance2 <= thickness_px**2] = colour


def draw_view(
    view: str, tcp: np.ndarray, opening: float | list[float], height: int, width: int, scene: Scene = _KOCH_SCENE
) -> np.ndarray:
    """One camera image [H, W, 3] uint8 for every arm's tool-centre-point position (metres, [arms, 3] or [3]
    for one arm) and gripper opening (0 closed .. 1 open, one per arm)."""
    points = np.asarray(tcp, dtype=np.float64).reshape(-1, 3)
    openings = [float(v) for v in np.atleast_1d(np.asarray(opening, dtype=np.float64))]
    if len(openings) != len(points) or len(points) != len(scene.anchors):
        raise ValueError(f"{len(scene.anchors)} arm(s) in the scene, {len(points)} positions, {len(openings)} openings")
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r} (known: {VIEWS})")
    if view not in scene.windows:
        raise ValueError(f"the scene has no window for the {view} view")
    scale = min(height, width) / 48.0
    canvas = _Canvas(height, width, *scene.windows[view])
    anchors = [arm[view] for arm in scene.anchors]
    colours = [(60, int(120 + 130 * value), 60) for value in openings]
    if view == "top":  # looking down: x to the right, y (away from the base) up
        canvas.fill((150, 120, 90))  # table
        bx, by = scene.bin_xy
        canvas.rectangle(bx - 0.03, by - 0.03, bx + 0.03, by + 0.03, (40, 50, 110))
        kx, ky = scene.block_xy
        canvas.rectangle(kx - 0.012, ky - 0.012, kx + 0.012, ky + 0.012, (200, 40, 40))
        for pedestal, _ in anchors:
            canvas.disc(*pedestal, 3 * scale, (30, 30, 30))  # base
        for (_, shoulder), (x, y, z), colour in zip(anchors, points, colours, strict=True):
            canvas.segment(shoulder, (x, y), (200, 200, 200), 1.2 * scale)
            canvas.disc(x, y, (2.0 + 8.0 * max(z, 0.0) / scene.reach_height) * scale, colour)
    else:  # "side" looks along -x: y to the right, z up; "front" looks along +y: x to the right, z up
        horizontal, vertical = scene.windows[view]
        canvas.fill((170, 190, 210))  # wall
        canvas.rectangle(horizontal[0], vertical[0], horizontal[1], 0.0, (150, 120, 90))  # table
        for (u, top), _ in anchors:
            canvas.rectangle(u - _PEDESTAL_HALF_WIDTH_M, 0.0, u + _PEDESTAL_HALF_WIDTH_M, top, (30, 30, 30))  # base
        across = 1 if view == "side" else 0
        for (_, shoulder), point, value, colour in zip(anchors, points, openings, colours, strict=True):
            tip = (float(point[across]), float(point[2]))
            canvas.segment(shoulder, tip, (200, 200, 200), 1.2 * scale)
            canvas.disc(*tip, (2.0 + 3.0 * value) * scale, colour)
    return canvas.pixels


# ── writing ───────────────────────────────────────────────────────────────────────────────────────


def dataset_features(profile: DemoProfile) -> dict:
    """LeRobot feature spec of the demo dataset, shaped like the robot's recorded datasets."""
    names = list(profile.joints)
    features = {
        key: {"dtype": "video", "shape": (profile.height, profile.width, 3), "names": ["height", "width", "channels"]}
        for key in profile.cameras
    }
    features["observation.state"] = {"dtype": "float32", "shape": (len(names),), "names": names}
    features["action"] = {"dtype": "float32", "shape": (len(names),), "names": names}
    return features


@contextlib.contextmanager
def _quiet_writer():
    """Silence SVT-AV1's banner (it prints to stderr from C unless SVT_LOG says otherwise), libav's
    info lines and datasets' progress bars, restoring all three afterwards. A user's SVT_LOG wins."""
    import av
    import datasets

    previous_svt_log = os.environ.get("SVT_LOG")
    os.environ.setdefault("SVT_LOG", "1")  # 1 = errors only
    previous_av_level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    # lerobot hands libav back its default callback after each encode; that one obeys libav's own level.
    av.logging.set_libav_level(av.logging.ERROR)
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if previous_svt_log is None:
            os.environ.pop("SVT_LOG", None)
        av.logging.set_level(previous_av_level)
        av.logging.set_libav_level(av.logging.INFO)  # libav's default level
        if bars_were_on:
            datasets.enable_progress_bars()


def camera_images(
    profile: DemoProfile, tcp: np.ndarray, state: np.ndarray, grippers: list[int | None]
) -> dict[str, np.ndarray]:
    """Every camera's image [H, W, 3] of one state (dataset units) whose arms' tool centre points are `tcp`
    [arms, 3]; `grippers`: where each arm's gripper sits in the state (`gripper_index`), None for none."""
    opening = [
        float(np.clip(float(state[index]) / profile.gripper_open, 0.0, 1.0)) if index is not None else 0.0
        for index in grippers
    ]
    return {
        key: draw_view(view, tcp, opening, profile.height, profile.width, profile.scene)
        for key, view in profile.cameras.items()
    }


def gripper_index(robot: RobotModel, arm: Arm) -> int | None:
    """Where the arm's gripper value sits in a dataset vector: the one its robot config names, else a joint
    called gripper (one arm) or <arm>_gripper; None when the arm has none."""
    names = [strip_position_suffix(name) for name in robot.dataset_joint_names]
    candidates = [arm.gripper.joint] if arm.gripper is not None else ["gripper", f"{arm.name}_gripper"]
    return next((names.index(name) for name in candidates if name in names), None)


def _write_with_lerobot(root: Path, profile: DemoProfile) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    robot = load_robot(profile.robot)
    grippers = [gripper_index(robot, arm) for arm in robot.arms]
    with _quiet_writer():
        dataset = LeRobotDataset.create(
            repo_id=f"local/{root.name}",
            fps=profile.fps,
            features=dataset_features(profile),
            root=root,
            robot_type=profile.robot_type,
            use_videos=True,
            video_backend="pyav",
        )
        try:
            for episode in range(profile.episodes):
                state, action = episode_joint_motion(profile, episode)
                poses = arm_poses(robot, state.astype(np.float64), units=profile.units)
                tcp = np.stack([np.asarray(arm.position) for arm in poses.values()], axis=1)  # [frames, arms, 3]
                for frame in range(profile.frames_per_episode):
                    item: dict = camera_images(profile, tcp[frame], state[frame], grippers)
                    item["observation.state"] = state[frame]
                    item["action"] = action[frame]
                    item["task"] = profile.task
                    dataset.add_frame(item)
                # In-process encoding: for clips this small a process pool costs more than it saves.
                dataset.save_episode(parallel_encoding=False)
        finally:
            dataset.finalize()


def write_demo_dataset(root: str | Path, profile: str | Path | dict | DemoProfile | None = None) -> Path:
    """Writes the demo dataset into the new folder `root` and returns it.

    The dataset is built in a hidden sibling folder and renamed onto `root` when complete, so an
    interrupted build leaves no half dataset at `root`.
    """
    root = Path(root)
    spec = load_demo_profile(profile)
    if root.exists():
        raise InputError(f"{root}: already exists; the demo dataset is written into a new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        built = staging / root.name
        _write_with_lerobot(built, spec)
        try:
            os.rename(built, root)
        except OSError:
            if root.exists():
                raise InputError(f"{root}: appeared while the demo dataset was being written") from None
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def demo_dataset_folder(cache_dir: str | Path | None, profile: DemoProfile) -> Path:
    """Where the cached demo dataset of this profile and lerobot version lies: <cache>/datasets/<name>-<key>."""
    datasets_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return datasets_dir / "datasets" / f"{profile.name}-{profile_cache_key(profile)}"


def ensure_demo_dataset(
    cache_dir: str | Path | None = None, profile: str | Path | dict | DemoProfile | None = None
) -> Path:
    """The cached demo dataset for this profile and lerobot version, written on first use."""
    spec = load_demo_profile(profile)
    target = demo_dataset_folder(cache_dir, spec)
    if (target / "meta" / "info.json").is_file():
        return target
    _remove_stale_partials(target.parent, spec.name)
    try:
        return write_demo_dataset(target, spec)
    except InputError:
        # Another process finished the same build first: its copy is as good as ours.
        if (target / "meta" / "info.json").is_file():
            return target
        raise


def _remove_stale_partials(folder: Path, name: str) -> None:
    """Staging folders of builds killed long ago (a live build is younger than this)."""
    if not folder.is_dir():
        return
    now = time.time()
    for partial in folder.glob(f".{name}-*.partial"):
        with contextlib.suppress(OSError):
            if now - partial.stat().st_mtime > _STALE_PARTIAL_S:
                shutil.rmtree(partial, ignore_errors=True)
