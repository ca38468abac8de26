"""The memory a run may use: the default budget (what the testset engine plans with) and what the process
holds now. Shared by the applications that plan their work within a budget."""
from __future__ import annotations

import os
import resource

from predict.core.stripes import usable_cores

MEMORY_PER_CORE = 700_000_000  # bytes of resident memory a run aims at per usable core (default)


def available_bytes() -> int | None:
    """MemAvailable of ``/proc/meminfo`` (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def default_memory_limit() -> int:
    """``MEMORY_PER_CORE`` per usable core (1.4 GB on 2 cores), at most half the memory available now."""
    limit = MEMORY_PER_CORE * usable_cores()
    available = available_bytes()
    return min(limit, available // 2) if available else limit


def resident_bytes() -> int:
    """This process's resident memory now (``/proc/self/statm``; its peak so far where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
