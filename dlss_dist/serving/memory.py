"""Memory sizes from flags, and this process's resident memory (Linux ``/proc``; None elsewhere).

`peak_rss` is the kernel's high-water mark of the resident set (``VmHWM``); `reset_peak`
sets it back to the current size (``/proc/self/clear_refs``, Linux 4.0+), which is how the
`Upscaler` measures what one model call costs.
"""

from __future__ import annotations

import re

GIB = 1024**3
MIB = 1024**2
# `--max_memory`'s default: the peak resident memory a CPU upscaling run aims to stay under.
DEFAULT_MAX_MEMORY = 2 * GIB

_UNITS = {"": 1, "b": 1, "k": 1024, "m": MIB, "g": GIB, "t": 1024**4}


def parse_memory(text: str | int) -> int:
    """Bytes from ``2G``, ``1.5GB``, ``1500M``, ``800MiB``, ``512k`` or a plain byte count.

    Units are binary (1G = 1024**3 bytes), as in `free -h` and Kubernetes' ``Gi``.

    Raises:
      ValueError naming the value, for anything else or a size that is not positive.
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), re.I)
        if not match:
            raise ValueError(f"memory size {text!r} is not a size: use e.g. 2G, 1500M or 800MiB")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"memory size {text!r} must be positive")
    return value


def format_bytes(value: float) -> str:
    """``1.5 GiB``, ``300 MiB``: sizes as `free -h` prints them."""
    if value >= GIB:
        return f"{value / GIB:.1f} GiB"
    return f"{value / MIB:.0f} MiB"


def _status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss() -> int | None:
    """Resident memory of this process now, in bytes (None where /proc is missing)."""
    return _status("VmRSS")


def peak_rss() -> int | None:
    """Peak resident memory of this process since start or the last `reset_peak`, in bytes."""
    return _status("VmHWM")


def reset_peak() -> bool:
    """Resets `peak_rss` to the current size; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True
