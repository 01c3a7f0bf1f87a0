"""The `verify-ate` command line: parses, dispatches, and turns errors into the documented exit codes.

Exit codes: 0 pass; 1 gate failed; 2 bad usage, config or input; 3 device or runtime unavailable;
130 interrupted. Everything else lives in the library packages below verify/cli/.
"""

from __future__ import annotations

import sys

from kinematics import RobotConfigError
from noise import NoiseFileError
from verify.errors import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, DeviceUnavailableError, InputError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from verify.cli.commands import SUBCOMMANDS, main_form

        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]](argv[1:])
        return main_form(argv)
    except (InputError, RobotConfigError, NoiseFileError) as error:
        print(f"verify-ate: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DeviceUnavailableError as error:
        print(f"verify-ate: unavailable: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        print("verify-ate: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Exception as error:  # a crash must not read as "gate failed" (exit 1)
        import traceback

        traceback.print_exc()
        print(f"verify-ate: runtime failure: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
