"""Process-wide allocator setting for camera-rate work: keep freed frame buffers for the next frame.

Every frame allocates and frees tens of MB (decoded views, the mosaic, tiles, pixel values). By default glibc
maps buffers this large with mmap, unmaps them when freed and trims its heap, so each frame page-faults all of
that memory back in: about 10 ms per frame on the development machine (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper bound on 64-bit systems: a six-view frame's buffers fit under it
TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """Serve allocations up to 32 MB from the heap and keep up to 512 MB of freed heap; False where this is not
    glibc (the setting then does not apply and nothing changes)."""
    library = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(library), "mallopt", None) if library else None
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
