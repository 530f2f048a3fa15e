"""Child processes that die with the process that started them, however it dies.

The dev stack starts its children (Redis, the development Wrapper, the server) in their own
sessions, so that a terminal's Ctrl-C reaches only the dev stack, which stops them in order.
That alone would orphan them when the dev stack dies without running its cleanup (SIGKILL,
a crash): `die_with_parent()` asks the kernel to signal each child then (Linux
`prctl(PR_SET_PDEATHSIG)`, set in the child between fork and exec).

Caveat (kernel semantics): the signal fires when the *thread* that forked the child ends,
not the process. Start owned children from a thread that lives as long as they should (the
dev stack starts all of them from its main thread).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen: the child gets `signum` when its parent dies.

    None where there is no PR_SET_PDEATHSIG (not Linux): the children then outlive a parent
    killed with SIGKILL, and the dev stack's leftover check reports them at the next start.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: the child only calls it
    parent = os.getpid()

    def in_child() -> None:
        if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            os._exit(126)  # cannot promise to die with the parent: refuse to run at all
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signum)

    return in_child
