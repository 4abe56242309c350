"""What grpc_check and flight_check share: named checks that are run
one after another, printed as `ok` / `FAIL` lines, and summed up at the end.
A failing check is recorded, never raised, so one run reports every fault."""

from __future__ import annotations

import sys
import time
from typing import Callable


class Checks:
    """`expected` are the exception types a failing check raises;
    `describe` turns one into the text after the check's name."""

    def __init__(self, expected: tuple[type[BaseException], ...],
                 describe: Callable[[BaseException], str] = str):
        self.expected = expected
        self.describe = describe
        self.failures: list[str] = []

    def check(self, name: str, fn: Callable[[], object]) -> None:
        """Run `fn`; its return value is the detail printed on success."""
        t0 = time.monotonic()
        try:
            detail = fn()
        except self.expected as e:
            self.fail(name, self.describe(e))
        else:
            self.ok(name, f"{detail} ({time.monotonic() - t0:.2f}s)")

    def ok(self, name: str, detail: str) -> None:
        print(f"ok   {name}: {detail}", flush=True)

    def fail(self, name: str, why: str) -> None:
        self.failures.append(f"{name}: {why}")
        print(f"FAIL {name}: {why}", flush=True)

    def finish(self, tool: str, against: str) -> int:
        """Print the summary line (and the failures on stderr); the exit code."""
        total = ("all checks passed" if not self.failures
                 else f"{len(self.failures)} check(s) failed")
        print(f"{tool}: {total} against {against}")
        for f in self.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1 if self.failures else 0
