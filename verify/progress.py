"""A small progress reporter on stderr: what the tool is doing now, and for how long it has run.

On a terminal it redraws one line (a bar, `\\r`); anywhere else (CI logs, files, pipes) it prints
one plain line per step, because a log keeps every `\\r` redraw as noise and loses nothing by
having a line per step. `quiet=True` prints nothing. stdout stays free for results.

Nothing looks hung: while a step runs longer than `heartbeat_s`, a background thread shows that it is
still running and for how long (a terminal line redrawn every second; in a log, one line per
`heartbeat_s`). The total is what the caller planned: each function that takes steps says how many
beside its code (`*_steps` functions), and the command adds them up. A step past the total raises the
total with it (the counter never reads 19/18) and marks the plan `overrun`, which the tests check.

    with Progress(3) as progress:
        progress.step("loading checkpoint")
        progress.step("running dut (cpu bfloat16)")
        ...
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

BAR_WIDTH = 20
HEARTBEAT_S = 10.0  # a step running longer than this says so, and again every this often in a log


class Progress:
    def __init__(
        self,
        total: int | None,
        quiet: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_s: float | None = HEARTBEAT_S,
    ):
        if total is not None and total < 0:
            raise ValueError(f"total must be >= 0, not {total}")
        self.total = total
        self.overrun = False  # a step was taken past the planned total
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._started = clock()
        self.count = 0
        self.message = ""
        self._closed = False
        self._line_open = False  # a redrawn terminal line that still needs its newline
        self._last_detail, self._last_quarter = float("-inf"), 0  # bytes_done's throttles
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self._lock = threading.Lock()  # the heartbeat thread writes too
        self._step_started = self._started
        self._heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def _counter(self) -> str:
        return f"{self.count}/{self.total}" if self.total is not None else str(self.count)

    def format_line(self, still: bool = False) -> str:
        """`[3/10] running dut (cpu bfloat16) 12.3s` (plain), or with a bar in front on a terminal; `still`: the
        heartbeat's form, `[3/10] running dut (cpu bfloat16) 42.3s (still running, 30s in this step)`."""
        text = f"[{self._counter()}] {self.message} {self.elapsed:.1f}s"
        if still:
            text += f" (still running, {self._clock() - self._step_started:.0f}s in this step)"
        if not self.interactive or not self.total:
            return text
        filled = min(BAR_WIDTH, round(BAR_WIDTH * self.count / self.total))
        return f"{'#' * filled}{'.' * (BAR_WIDTH - filled)} {text}"

    def _write(self, line: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._write_unlocked(line)

    def _write_unlocked(self, line: str) -> None:
        if self.interactive:
            # \r + erase-to-end-of-line: a shorter message leaves no tail of the previous one.
            self.stream.write(f"\r{line}\x1b[K")
            self._line_open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def step(self, message: str) -> None:
        """Starts the next step: advances the counter and shows `message` with the elapsed time."""
        if self._closed:
            raise RuntimeError("progress already closed")
        self.count += 1
        if self.total is not None and self.count > self.total:
            self.total, self.overrun = self.count, True
        self.message = str(message)
        self._step_started = self._clock()
        self._last_detail, self._last_quarter = float("-inf"), 0
        self._write(self.format_line())
        self._start_heartbeat()

    def extend(self, steps: int) -> None:
        """`steps` more steps than planned, said by work that only starts on a decision made during the run
        (a trace taken because the gate failed), at its start."""
        if self.total is not None:
            self.total += steps

    def note(self, message: str) -> None:
        """Work inside the current step that only some runs do (a conversion on first use): shown with the
        step's counter, not counted, so the plan holds whichever way it goes."""
        if self._closed:
            raise RuntimeError("progress already closed")
        self.message = str(message)
        self._step_started = self._clock()
        self._write(self.format_line())

    def _start_heartbeat(self) -> None:
        if self.quiet or self._heartbeat_s is None or self._heartbeat is not None:
            return
        self._heartbeat = threading.Thread(target=self._beat, name="verify-ate-progress", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        """Runs beside the work: shows a long step is alive (terminal: every second; log: every heartbeat_s)."""
        assert self._heartbeat_s is not None
        last_line = self._clock()
        while not self._stop.wait(1.0 if self.interactive else min(1.0, self._heartbeat_s)):
            now = self._clock()
            running = now - self._step_started
            if running < self._heartbeat_s or (not self.interactive and now - last_line < self._heartbeat_s):
                continue
            with self._lock:
                if self._closed:
                    return
                self._write_unlocked(self.format_line(still=True))
            last_line = now

    def bytes_done(self, done: int, total: int) -> None:
        """Progress inside the current step, in bytes (a model's weights being read).

        A terminal redraws the step's line with `1.2/16.1 GiB (7%)`, at most five times a second;
        a log gets a line at each quarter, and only for a step of at least 1 GiB (a small
        checkpoint loads before a log line could help anyone).
        """
        if self.quiet or self._closed or total <= 0:
            return
        share = done / total
        now = self._clock()
        if self.interactive:
            if done < total and now - self._last_detail < 0.2:
                return
            self._last_detail = now
        else:
            quarter = int(share * 4)
            if total < 2**30 or quarter <= self._last_quarter:
                return
            self._last_quarter = quarter
        base = self.message.split(" [", 1)[0]
        self.message = f"{base} [{done / 2**30:.2f}/{total / 2**30:.2f} GiB, {share:.0%}]"
        self._write(self.format_line())

    def close(self, message: str | None = None) -> None:
        """Ends the display with a final line (`done`, or `message`) and the total time; safe to call twice."""
        if self._closed:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        self._closed = True
        if self.quiet:
            return
        self.message = message if message is not None else "done"
        self._write(self.format_line())
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close("interrupted" if exc_type is KeyboardInterrupt else ("failed" if exc_type else None))
