"""What the benchmarks share: warming the page cache, and a child's peak RSS seen from outside."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

MB = 1 << 20


def warm(path: Path) -> None:
    """Read the file once so every method starts from the page cache."""
    with open(path, "rb") as src:
        while src.read(16 * MB):
            pass


def poll_peak_rss(proc: subprocess.Popen, every_s: float = 0.05) -> int:
    """The child's largest RSS in bytes, polled until it exits (a cross-check of its getrusage)."""
    import psutil

    peak = 0
    try:
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            peak = max(peak, ps.memory_info().rss)
            time.sleep(every_s)
    except psutil.NoSuchProcess:
        pass
    return peak
