"""Seam: lerobot 0.6.1's LeRobot v2.1 -> v3.0 dataset converter (lerobot/scripts/convert_dataset_v21_to_v30.py),
whose steps are module functions of a script rather than an interface: they are called here one by one, without
the hub download and upload that the script's own entry point wraps them in."""

from __future__ import annotations

from pathlib import Path

from verify_ate.verify.errors import InputError


def convert_v21_to_v30(old: Path, new: Path, source: Path) -> None:
    """The steps of lerobot 0.6.1's converter (scripts/convert_dataset_v21_to_v30.py `convert_dataset`, whose
    first and last steps fetch from and push to the hub) from the staging folder `old` into `new`, in the
    order that function runs them; its per-step log lines and progress bars are kept off the user's terminal.
    A failure is an InputError naming `source`, the dataset the user gave."""
    import contextlib
    import io
    import logging

    from lerobot.scripts import convert_dataset_v21_to_v30 as converter

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            data_mb, video_mb = converter.DEFAULT_DATA_FILE_SIZE_IN_MB, converter.DEFAULT_VIDEO_FILE_SIZE_IN_MB
            converter.convert_info(old, new, data_mb, video_mb)
            converter.convert_tasks(old, new)
            episodes = converter.convert_data(old, new, data_mb)
            videos = converter.convert_videos(old, new, video_mb)
            converter.convert_episodes_metadata(old, new, episodes, videos)
    except Exception as error:  # the converter reads every file of the dataset, and says little
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(
            f"{source}: lerobot's v2.1 -> v3.0 conversion failed ({type(error).__name__}: {first})"
        ) from None
    finally:
        logging.getLogger().setLevel(level)
