"""The CCR's own errors: both are retryable, so both are :class:`UnavailableError`."""

from __future__ import annotations

from haos.errors import UnavailableError


class OutcomeUnknownError(UnavailableError):
    """A write was sent but its fate is not known here: it may or may not be applied.

    Raised when the request's deadline passed, when the group changed while the write was
    queued behind a membership change, or when the write was applied locally but could not be
    confirmed on a majority before the partition lost quorum. Read the key (or retry with a
    compare on its revision) to find out.
    """

    code = "ccr-outcome-unknown"


class WatchLostError(UnavailableError):
    """A watch can no longer be continued without a gap: re-read and watch again.

    The watcher fell behind its queue bound, the revision it asked to start after is no
    longer in the change log, or the node's copy was replaced by a snapshot from another
    member (the changes in between are not known one by one).
    """

    code = "ccr-watch-lost"
