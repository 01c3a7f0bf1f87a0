"""The `verify-ate` command line: parses, dispatches, and turns errors into the documented exit codes.

Exit codes: 0 pass; 1 gate failed; 2 bad usage, config or input file (also an output that cannot
be written); 3 device or runtime unavailable; 130 / 143 interrupted by SIGINT / SIGTERM. Every
error is one line on stderr; `--debug` (or VERIFY_ATE_DEBUG=1) adds the traceback, for bug reports.
Everything else lives in the library packages below verify/cli/.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

from kinematics import RobotConfigError
from noise import NoiseFileError
from verify.errors import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, DeviceUnavailableError, InputError

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "VERIFY_ATE_DEBUG"
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so that every cleanup path runs for both."""


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        from verify.cli.commands import SUBCOMMANDS, main_form

        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]](argv[1:])
        return main_form(argv)
    except (InputError, RobotConfigError, NoiseFileError) as error:
        return _report(f"error: {_one_line(error)}", EXIT_BAD_INPUT, debug)
    except OSError as error:  # a file that cannot be read or written, wherever it surfaced
        where = f"{error.filename}: " if error.filename else ""
        return _report(f"error: {where}{error.strerror or _one_line(error)}", EXIT_BAD_INPUT, debug)
    except DeviceUnavailableError as error:
        return _report(f"unavailable: {_one_line(error)}", EXIT_UNAVAILABLE, debug)
    except Terminated:
        return _report("terminated (SIGTERM); nothing half-written was left behind", EXIT_TERMINATED, debug)
    except KeyboardInterrupt:
        return _report("interrupted; nothing half-written was left behind", EXIT_INTERRUPTED, debug)
    except Exception as error:  # a crash must not read as "gate failed" (exit 1)
        hint = "" if debug else f" (run again with {DEBUG_FLAG} for the traceback)"
        return _report(f"runtime failure: {type(error).__name__}: {_one_line(error)}{hint}", EXIT_UNAVAILABLE, debug)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _report(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"verify-ate: {message}", file=sys.stderr)
    return code
