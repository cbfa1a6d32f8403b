"""The wire protocol between HA-aware applications and their node agent, version 1.

JSON objects, one per line (UTF-8, at most :data:`MAX_LINE` bytes), over the agent's unix
socket (``HAOS_AGENT_SOCKET``, ``/run/haos/components.sock`` on a node).

The application sends **requests**, each with an ``id`` of its choosing; the agent answers
each with ``{"id": <id>, "ok": true, ...}`` or ``{"id": <id>, "ok": false, "error": <code>,
"message": <text>}``. The first request must be ``hello``::

    {"op": "hello", "id": 1, "version": 1, "component": "n1/demo", "pid": 4242}
        -> {"id": 1, "ok": true, "version": 1}
    {"op": "report_error", "id": 2, "kind": "error", "detail": "disk full"}
        (kind: crash | hang | audit-failed | audit-overdue | error | hardware)
    {"op": "register_audit", "id": 3, "name": "alive", "period": 1.0, "timeout": 0.5}
    {"op": "ckpt_write", "id": 4, "section": "counter", "data": "<base64>", "sync": true}
    {"op": "ckpt_read", "id": 5, "section": "counter"}  -> {..., "data": "<base64>" | null}
    {"op": "name_bind", "id": 6, "name": "demo/counter", "handle": "10.0.0.1:7000"}
    {"op": "name_lookup", "id": 7, "name": "demo/counter"}  -> {..., "handle": "..." | null}

The agent **pushes** orders, each with a ``seq``, and the application answers each one::

    {"op": "role", "seq": 9, "state": "primary", "graceful": false}
        <- {"op": "ack", "seq": 9}   (once it has taken the role; or "ok": false, "message")
    {"op": "quiesce", "seq": 10}      <- {"op": "quiesced", "seq": 10}
    {"op": "audit", "seq": 11, "name": "alive"}
        <- {"op": "audit_result", "seq": 11, "ok": true, "detail": "42 requests/s"}

A request the agent cannot use is answered ``{"id": <id>, "ok": false, "error": "usage",
"message": ...}``; any other message it cannot use (no id, not JSON, an answer to nothing)
with ``{"op": "error", "ok": false, "error": "usage", "message": ...}``. Both are counted. A
bad hello (wrong version, unknown component) or a line over the limit also ends the
connection. A request whose line is over the limit is refused by the client library before it
is sent, and so is checkpoint data over :data:`haos.limits.MAX_CHECKPOINT_DATA`. Lines are
read and written by :mod:`haos.jsonlines` at both ends (bounded, no number that is not finite,
no deep nesting). This module is shared by both ends and imports only that, the limits and
:mod:`haos.errors`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from haos import jsonlines
from haos.limits import MAX_CHECKPOINT_DATA, MAX_SOCKET_LINE

VERSION = 1
MAX_LINE = MAX_SOCKET_LINE
MAX_DATA = MAX_CHECKPOINT_DATA

# The availability states, as the "state" of a role message carries them.
STATES = ("offline", "spare", "secondary", "primary")
# Error kinds an application may report (the values of haos.model.reports.ErrorKind).
ERROR_KINDS = ("crash", "hang", "audit-failed", "audit-overdue", "error", "hardware")


class BadMessage(ValueError):
    """A line that is not a message of this protocol; the text says what is wrong. ``id`` is
    the request's id when it could still be read (so the answer can name the request)."""

    def __init__(self, message: str, id: int | None = None) -> None:
        super().__init__(message)
        self.id = id


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as one line; :class:`~haos.jsonlines.LineTooLong` if it is over
    :data:`MAX_LINE`, :class:`~haos.jsonlines.BadLine` if it holds a number not finite."""
    return jsonlines.encode(message, what=f"{message.get('op') or 'answer'} message")


def decode(line: bytes, *, reply: bool = False) -> dict[str, Any]:
    """The message on ``line``: a JSON object with a string ``op`` (a ``reply`` may have an
    ``id`` instead), else :class:`BadMessage`."""
    try:
        message = jsonlines.decode(line)
    except jsonlines.BadLine as e:
        request_id = None if e.obj is None else e.obj.get("id")
        plain = isinstance(request_id, int) and not isinstance(request_id, bool)
        raise BadMessage(str(e), request_id if plain else None) from None
    if reply and "id" in message:
        return message
    if not isinstance(message.get("op"), str):
        raise BadMessage("no op (a string) in the message")
    return message


def pack(data: bytes) -> str:
    """Bytes as they travel in a JSON string (base64)."""
    return base64.b64encode(data).decode("ascii")


def unpack(text: object) -> bytes:
    """The bytes :func:`pack` made; :class:`BadMessage` for anything else."""
    if not isinstance(text, str):
        raise BadMessage("data must be a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BadMessage("data is not valid base64") from None
