"""The ``[management]`` table: where the management daemon (``haos-mgmtd``) listens and who
may use it from outside the node.

::

    [management]
    listen = "0.0.0.0"          # an IPv4 or IPv6 address ["127.0.0.1": this node only]
    port = 7080                 # 1..65535 [7080]
    token_files = ["/etc/haos/mgmt/noc.token"]   # each file holds one bearer token
    tls_cert = "/etc/haos/mgmt/cert.pem"         # both or neither: HTTPS instead of HTTP
    tls_key = "/etc/haos/mgmt/key.pem"

Requests from loopback need no credentials; any other needs ``Authorization: Bearer
<token>`` with a token from one of ``token_files``; with none configured only loopback may
call (see :mod:`haos.mgmt.auth`). Tokens live in files, never in cluster.toml (which every
node and operator reads) nor on a command line: paths must be absolute here, and
``haos-mgmtd`` reads them when it starts (a missing, unreadable or empty one stops it with a
configuration error naming the key and the file), so the other daemons do not depend on them.
"""

from __future__ import annotations

import os

from haos.config.model import ManagementSpec
from haos.config.schema import (
    Invalid,
    Problems,
    Setting,
    array,
    integer,
    ip_address,
    read_table,
    short_repr,
    text,
)


def absolute_path(value: object) -> str:
    path = text(value)
    if not os.path.isabs(path) or "\0" in path:
        raise Invalid(f"must be an absolute path, not {short_repr(path)}")
    return path


def _token_files(value: object) -> tuple[str, ...]:
    paths: tuple[str, ...] = array(absolute_path)(value)
    if len(set(paths)) != len(paths):
        raise Invalid(f"names a file twice: {short_repr(value)}")
    return paths


MANAGEMENT = (
    Setting("listen", ip_address),
    Setting("port", integer(1, 65535)),
    Setting("token_files", _token_files),
    Setting("tls_cert", absolute_path),
    Setting("tls_key", absolute_path),
)


def read_management(raw: object, problems: Problems) -> ManagementSpec:
    """The ``[management]`` table (absent: the defaults); problems name the key."""
    if raw is None:
        return ManagementSpec()
    entry = read_table(raw, "management", MANAGEMENT, problems)
    spec = ManagementSpec(**entry.values)
    if entry.complete and (spec.tls_cert is None) != (spec.tls_key is None):
        pair = ("tls_cert", "tls_key")
        given, missing = pair if spec.tls_key is None else pair[::-1]
        problems.add(f"management.{missing}", f"is required with {given} (both or neither)")
    return spec
