"""Size limits that more than one layer must agree on.

A checkpoint section travels from an application's socket through the node agent and the node
daemon's control socket to the checkpoint service, which carries it to its replicas in chunks.
Each hop must accept what the next one does, so the numbers live here, once.
"""

from __future__ import annotations

MiB = 1024 * 1024

# The largest checkpoint section as the checkpoint service stores and replicates it. Larger
# writes are refused with an error that names this limit before anything is sent.
MAX_CHECKPOINT_SECTION = 16 * MiB

# The largest section an application writes (``haos.client``): the cluster daemon keeps a
# section as the base64 text the application socket carried, 4 bytes for every 3.
MAX_CHECKPOINT_DATA = MAX_CHECKPOINT_SECTION // 4 * 3

# The longest JSON line a haos socket (application socket, control socket) accepts: a section
# of MAX_CHECKPOINT_SECTION bytes in base64 (4/3 of it) plus the request around it. A longer
# line is answered with an error and the connection closed; the daemon serves everyone else.
MAX_SOCKET_LINE = MAX_CHECKPOINT_SECTION * 4 // 3 + 1 * MiB
