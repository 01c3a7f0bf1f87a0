"""The documented exit codes, the errors behind them, and the one map from an error to its code.

0 pass; 1 gate failed; 2 bad usage, config or input file (also an output that cannot be written);
3 device or runtime unavailable (also a crash, which must never read as "gate failed"); 130 / 143
interrupted by SIGINT / SIGTERM.
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class InputError(ValueError):
    """Bad usage, config or input file: exit 2. The message names the file and the problem."""


class DeviceUnavailableError(RuntimeError):
    """A device or runtime that is not there (no torch_npu, no CUDA, index out of range): exit 3."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so that every cleanup path runs for both."""


def interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM that a library turned into an ordinary error (transformers' lazy imports re-raise what
    interrupted them as ImportError), found in its cause or context chain; None when there is none."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def input_errors() -> tuple[type[BaseException], ...]:
    """The error types that mean a bad input (exit 2): this package's and those of the packages below it."""
    from verify_ate.kinematics import RobotConfigError
    from verify_ate.kinematics.units import CalibrationFileError
    from verify_ate.noise import NoiseFileError

    return (InputError, RobotConfigError, CalibrationFileError, NoiseFileError)


def exit_code(error: BaseException) -> int:
    """The exit code of a run that ended with `error`."""
    if isinstance(error, Terminated):
        return EXIT_TERMINATED
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, input_errors()) or isinstance(error, OSError):  # a file that cannot be read or written
        return EXIT_BAD_INPUT
    return EXIT_UNAVAILABLE
