"""One context-manager shape for everything haos starts and must tear down again."""

from __future__ import annotations

from typing import Self


class Closing:
    """``with`` support for an object with :meth:`close`: entering runs :meth:`_open` (and
    closes again when that fails, so nothing half-started is left), leaving closes."""

    def _open(self) -> None:
        """What entering starts; nothing by default."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
