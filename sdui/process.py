"""Process set-up the entry points (``app.py``, the ``sdui`` command, the bench) do before any work."""

from __future__ import annotations

import os
import sys


def reexec_with_one_malloc_arena() -> None:
    """Restart this process with ``MALLOC_ARENA_MAX=1`` (Linux/glibc), once, before any work.

    Generation runs on a worker thread (the job queue). glibc gives each thread its own malloc
    arena, and a thread arena serves the many-megabyte tensors of a UNet step with fresh ``mmap``
    calls, paying page faults on every step: measured here, the same txt2img ran 35% slower on a
    worker thread than on the main thread, and at the main thread's speed with one arena. The
    variable must be set before the process starts (``mallopt`` at run time did not give the same
    result), hence the re-exec. Entry points call this; library code and tests never do.
    """
    if (sys.platform.startswith("linux") and "MALLOC_ARENA_MAX" not in os.environ
            and not os.environ.get("SDUI_NO_REEXEC") and getattr(sys, "orig_argv", None)):
        os.environ["MALLOC_ARENA_MAX"] = "1"
        try:
            os.execv(sys.executable, sys.orig_argv)
        except OSError:
            pass  # run on, just slower
