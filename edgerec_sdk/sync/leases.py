"""Who holds an outbox lease: owner strings that name the host and process, so a dead holder is recognised.

An uploader leases a batch for ``lease_s`` before sending it. When its process dies (``SIGKILL``, OOM, a
gunicorn worker timeout) the lease would otherwise hold the batch back until it expires; the next process of
the host that opens the outbox sees that the holder's pid is gone and takes the batch back at once (fault D10).
Holders on another host, or whose pid still exists, are left alone: the lease expires as usual, and a double
send is harmless because the hub dedupes on ``event_id``.
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["holder_is_dead", "new_owner"]

_HOST = socket.gethostname()[:64]


def new_owner(edge_id: str) -> str:
    """A lease owner for this process: ``<edge_id>@<host>:<pid>:<nonce>``."""
    return f"{edge_id}@{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(owner: str) -> bool:
    """Whether ``owner`` names a process of this host that no longer exists (never this process)."""
    _, sep, where = owner.rpartition("@")
    host, _, rest = where.partition(":")
    pid_text = rest.partition(":")[0]
    if not sep or host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, someone else's
        return False
    return False
