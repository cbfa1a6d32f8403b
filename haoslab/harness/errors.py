"""The harness's errors: one branch of the haos error tree."""

from __future__ import annotations

from collections.abc import Sequence

from haos.errors import HaosError


class HarnessError(HaosError):
    """The test cluster could not be built, driven or torn down as asked."""

    code = "harness"


class HarnessTimeout(HarnessError):
    """A condition the harness waited for did not come true before its deadline.

    The message names the condition and shows every node's view at the deadline.
    """

    code = "harness-timeout"


class CommandFailed(HarnessError):
    """A helper command (ip, nft, nsenter, corosync tools) exited non-zero or timed out."""

    code = "harness-command"

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited with {returncode}"
        detail = stderr.strip()
        super().__init__(f"{' '.join(argv)} {status}" + (f": {detail}" if detail else ""))
