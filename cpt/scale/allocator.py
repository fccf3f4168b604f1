"""glibc's malloc told to keep freed memory for reuse: a CPU training step without page faults.

As it comes, glibc hands a block above its mmap threshold (dynamic, at most 32 MiB) back to the
kernel when it is freed, and trims the top of its heap once more than twice that is free there.
A training step allocates and frees the same large tensors every step (the output head's weight
gradient, autocast's bf16 copies of the weights, the embedding's gradient), so their pages are
faulted back in, zeroed by the kernel, every step. With mmap and trimming off, freed blocks stay in
the heap and the next step reuses them, at the price of a somewhat higher resident peak (what each
costs, measured: docs/performance.md). `cpt.train` does this on a CPU (`keep_freed_memory`,
default on).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's <malloc.h>
NEVER = 2**31 - 1  # mallopt takes a C int


def keep_freed_memory() -> bool:
    """Turn off glibc's mmap for large blocks and its heap trimming, for this process from now
    on; False (and nothing changed) where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)  # the C library the process already runs on
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # musl and others: their own allocator, their own behaviour
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER) == 1
