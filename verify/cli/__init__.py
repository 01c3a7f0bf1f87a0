"""The `verify-ate` command line: parses, dispatches, and turns errors into the documented exit codes.

Exit codes (verify_ate.verify.errors): 0 pass; 1 gate failed; 2 bad usage, config or input file (also an
output that cannot be written); 3 device or runtime unavailable; 130 / 143 interrupted by SIGINT /
SIGTERM. Every error is one line on stderr; `--debug` (or VERIFY_ATE_DEBUG=1) adds the traceback, for bug
reports. Everything else lives in the library packages below verify/cli/.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Iterable

from verify_ate.verify.errors import (
    EXIT_BAD_INPUT,
    EXIT_UNAVAILABLE,
    DeviceUnavailableError,
    Terminated,
    exit_code,
    input_errors,
)

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "VERIFY_ATE_DEBUG"


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        from verify_ate.verify.cli.commands import SUBCOMMANDS, main_form

        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]](argv[1:])
        if argv and not argv[0].startswith("-"):
            return _unknown_command(argv[0], SUBCOMMANDS)
        return main_form(argv)
    except BaseException as error:  # every way out has its documented code and one line
        if isinstance(error, SystemExit):
            raise
        return _report(error, debug)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _unknown_command(word: str, commands: Iterable[str]) -> int:
    from verify_ate.verify.cli.args import close_command

    close = close_command(word, commands)
    hint = f"did you mean {close!r}? " if close else ""
    print(
        f"verify-ate: error: unknown command {word!r}; {hint}(commands: {', '.join(commands)}; the main form takes "
        "only flags: verify-ate -h)",
        file=sys.stderr,
    )
    return EXIT_BAD_INPUT


def _report(error: BaseException, debug: bool) -> int:
    code = exit_code(error)
    if isinstance(error, Terminated):
        message = "terminated (SIGTERM); nothing half-written was left behind"
    elif isinstance(error, KeyboardInterrupt):
        message = "interrupted; nothing half-written was left behind"
    elif isinstance(error, input_errors()):
        message = f"error: {_one_line(error)}"
    elif isinstance(error, OSError):  # a file that cannot be read or written, wherever it surfaced
        where = f"{error.filename}: " if error.filename else ""
        message = f"error: {where}{error.strerror or _one_line(error)}"
    elif isinstance(error, DeviceUnavailableError):
        message = f"unavailable: {_one_line(error)}"
    else:  # a crash must not read as "gate failed" (exit 1)
        assert code == EXIT_UNAVAILABLE
        hint = "" if debug else f" (run again with {DEBUG_FLAG} for the traceback)"
        message = f"runtime failure: {type(error).__name__}: {_one_line(error)}{hint}"
    if debug:
        traceback.print_exception(error)
    print(f"verify-ate: {message}", file=sys.stderr)
    return code


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
