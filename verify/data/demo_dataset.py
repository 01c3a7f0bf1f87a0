"""A small Koch-like LeRobot v3.0 dataset, written by lerobot's own writer, for the demo and the tests.

The real `koch_test` dataset lives on the hub, which these machines cannot reach. This writes the
same layout (robot_type koch, 30 fps, laptop + phone cameras as mp4 videos, state/action in degrees
in the Koch joint order) with smooth in-limit joint motion and images drawn from the arm's pose, so
frames differ from one another and the policy's inputs depend on the state. Everything it draws
from is in configs/profiles/demo_dataset.yaml.

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

from verify_ate.kinematics import dataset_forward_kinematics, load_robot
from verify_ate.kinematics.robot import RobotConfigError, RobotModel
from verify_ate.verify.cache import default_cache_dir
from verify_ate.verify.configs import CONFIGS_DIR, read_yaml
from verify_ate.verify.errors import InputError

DEFAULT_PROFILE = CONFIGS_DIR / "profiles" / "demo_dataset.yaml"
# Bump when the generated content changes for the same profile, so cached copies are rebuilt.
GENERATOR_VERSION = 1
DATASET_NAME = "koch_demo"
VIEWS = ("top", "side")
# Half extent of the drawn scene around the arm, metres: the Koch reaches about 0.3 m.
_SCENE_EXTENT_M = 0.3
_STALE_PARTIAL_S = 3600.0


@dataclass(frozen=True)
class JointMotion:
    centre_deg: float
    amplitude_deg: float
    cycles: float


@dataclass(frozen=True)
class DemoProfile:
    robot: str
    robot_type: str
    fps: int
    task: str
    seed: int
    episodes: int
    frames_per_episode: int
    height: int
    width: int
    cameras: dict[str, str]  # feature key -> view ("top" | "side")
    action_lead_frames: int
    amplitude_scale: tuple[float, float]
    joints: dict[str, JointMotion]  # in dataset order
    document: dict  # the YAML as loaded: the cache key hashes it
    source: str


def load_demo_profile(profile: str | Path | dict | DemoProfile | None = None) -> DemoProfile:
    """The demo dataset profile from a YAML file (default configs/profiles/demo_dataset.yaml) or a dict."""
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


def _parse_profile(document: dict, source: str) -> DemoProfile:
    if not isinstance(document, dict):
        raise ValueError("the file must hold a mapping")
    robot = load_robot(str(document["robot"]))
    image = document["image"]
    cameras = {str(key): str(view) for key, view in document["cameras"].items()}
    for key, view in cameras.items():
        if not key.startswith("observation.images."):
            raise ValueError(f"camera {key!r} must be named observation.images.<name>")
        if view not in VIEWS:
            raise ValueError(f"camera {key!r}: view must be one of {VIEWS}, not {view!r}")
    joints_doc = document["joints"]
    if list(joints_doc) != list(robot.dataset_joint_names):
        raise ValueError(
            f"joints must be {list(robot.dataset_joint_names)} in that order (robot {robot.name}), got "
            f"{list(joints_doc)}"
        )
    joints = {
        name: JointMotion(float(spec["centre_deg"]), float(spec["amplitude_deg"]), float(spec["cycles"]))
        for name, spec in joints_doc.items()
    }
    low, high = (float(v) for v in document["amplitude_scale"])
    if not 0 < low <= high <= 1:
        raise ValueError(f"amplitude_scale must satisfy 0 < low <= high <= 1, got {[low, high]}")
    lead = document["action_lead_frames"]
    if isinstance(lead, bool) or not isinstance(lead, int) or lead < 0:
        raise ValueError(f"action_lead_frames must be a non-negative integer, not {lead!r}")
    profile = DemoProfile(
        robot=robot.name,
        robot_type=str(document["robot_type"]),
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
        document=document,
        source=source,
    )
    _check_envelope_in_limits(profile, robot)
    return profile


def _check_envelope_in_limits(profile: DemoProfile, robot: RobotModel) -> None:
    """Every kinematic joint's centre +- amplitude must map inside the model's joint limits."""
    centre = np.array([m.centre_deg for m in profile.joints.values()])
    amplitude = np.array([m.amplitude_deg for m in profile.joints.values()])
    ends = robot.dataset_to_model(np.stack([centre - amplitude, centre + amplitude]), units="deg")
    low, high = ends.min(axis=0), ends.max(axis=0)
    for i, name in enumerate(robot.joint_names):
        if low[i] < robot.lower_limits[i] or high[i] > robot.upper_limits[i]:
            raise ValueError(
                f"joint {name}: centre +- amplitude reaches model angles [{np.degrees(low[i]):.1f}, "
                f"{np.degrees(high[i]):.1f}] deg, outside the limits [{np.degrees(robot.lower_limits[i]):.1f}, "
                f"{np.degrees(robot.upper_limits[i]):.1f}] deg of {robot.source}"
            )


def profile_cache_key(profile: DemoProfile) -> str:
    """Short hash of the profile, the lerobot version and the generator version."""
    import lerobot

    identity = {"profile": profile.document, "lerobot": lerobot.__version__, "generator": GENERATOR_VERSION}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ── joint motion and images ───────────────────────────────────────────────────────────────────────


def episode_joint_motion(profile: DemoProfile, episode: int) -> tuple[np.ndarray, np.ndarray]:
    """(state, action) of one episode, each [frames, 6] float32 in dataset degrees."""
    rng = np.random.default_rng([profile.seed, episode])
    motions = list(profile.joints.values())
    phase = rng.uniform(0.0, 2 * np.pi, size=len(motions))
    scale = rng.uniform(*profile.amplitude_scale)
    steps = profile.frames_per_episode + profile.action_lead_frames
    t = np.arange(steps)[:, None] / profile.frames_per_episode
    centre = np.array([m.centre_deg for m in motions])
    amplitude = np.array([m.amplitude_deg for m in motions])
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


# Fixed props of the scene (metres, world frame of the robot model): where the block waits and the bin stands.
_BLOCK_XY = (-0.07, 0.17)
_BIN_XY = (0.09, 0.15)
_SHOULDER_YZ = (0.033, 0.052)


def draw_view(view: str, tcp: np.ndarray, gripper_deg: float, height: int, width: int) -> np.ndarray:
    """One camera image [H, W, 3] uint8 for a tool-centre-point position (metres) and gripper opening."""
    x, y, z = (float(v) for v in tcp)
    opening = float(np.clip(gripper_deg / 45.0, 0.0, 1.0))
    gripper_colour = (60, int(120 + 130 * opening), 60)
    scale = min(height, width) / 48.0
    if view == "top":  # looking down: x to the right, y (away from the base) up
        canvas = _Canvas(height, width, (-_SCENE_EXTENT_M / 2, _SCENE_EXTENT_M / 2), (-0.02, 0.26))
        canvas.fill((150, 120, 90))  # table
        canvas.rectangle(_BIN_XY[0] - 0.03, _BIN_XY[1] - 0.03, _BIN_XY[0] + 0.03, _BIN_XY[1] + 0.03, (40, 50, 110))
        canvas.rectangle(
            _BLOCK_XY[0] - 0.012, _BLOCK_XY[1] - 0.012, _BLOCK_XY[0] + 0.012, _BLOCK_XY[1] + 0.012, (200, 40, 40)
        )
        canvas.disc(0.0, 0.0, 3 * scale, (30, 30, 30))  # base
        canvas.segment((0.0, 0.0), (x, y), (200, 200, 200), 1.2 * scale)
        canvas.disc(x, y, (2.0 + 8.0 * max(z, 0.0) / 0.25) * scale, gripper_colour)
    elif view == "side":  # looking along -x: y to the right, z up
        canvas = _Canvas(height, width, (-0.05, _SCENE_EXTENT_M), (-0.03, 0.25))
        canvas.fill((170, 190, 210))  # wall
        canvas.rectangle(-0.05, -0.03, _SCENE_EXTENT_M, 0.0, (150, 120, 90))  # table
        canvas.rectangle(-0.02, 0.0, 0.02, _SHOULDER_YZ[1], (30, 30, 30))  # base
        canvas.segment(_SHOULDER_YZ, (y, z), (200, 200, 200), 1.2 * scale)
        canvas.disc(y, z, (2.0 + 3.0 * opening) * scale, gripper_colour)
    else:
        raise ValueError(f"unknown view {view!r} (known: {VIEWS})")
    return canvas.pixels


# ── writing ───────────────────────────────────────────────────────────────────────────────────────


def dataset_features(profile: DemoProfile) -> dict:
    """LeRobot feature spec of the demo dataset, shaped like the recorded Koch datasets."""
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


def _write_with_lerobot(root: Path, profile: DemoProfile) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    robot = load_robot(profile.robot)
    gripper = list(profile.joints).index("gripper") if "gripper" in profile.joints else None
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
                tcp = dataset_forward_kinematics(robot, state.astype(np.float64), units="deg").position
                for frame in range(profile.frames_per_episode):
                    opening = float(state[frame, gripper]) if gripper is not None else 0.0
                    item = {
                        key: draw_view(view, tcp[frame], opening, profile.height, profile.width)
                        for key, view in profile.cameras.items()
                    }
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


def ensure_demo_dataset(
    cache_dir: str | Path | None = None, profile: str | Path | dict | DemoProfile | None = None
) -> Path:
    """The cached demo dataset for this profile and lerobot version, written on first use."""
    spec = load_demo_profile(profile)
    datasets_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    datasets_dir = datasets_dir / "datasets"
    target = datasets_dir / f"{DATASET_NAME}-{profile_cache_key(spec)}"
    if (target / "meta" / "info.json").is_file():
        return target
    _remove_stale_partials(datasets_dir)
    try:
        return write_demo_dataset(target, spec)
    except InputError:
        # Another process finished the same build first: its copy is as good as ours.
        if (target / "meta" / "info.json").is_file():
            return target
        raise


def _remove_stale_partials(folder: Path) -> None:
    """Staging folders of builds killed long ago (a live build is younger than this)."""
    if not folder.is_dir():
        return
    now = time.time()
    for partial in folder.glob(f".{DATASET_NAME}-*.partial"):
        with contextlib.suppress(OSError):
            if now - partial.stat().st_mtime > _STALE_PARTIAL_S:
                shutil.rmtree(partial, ignore_errors=True)
