"""What the benchmarks share: warming the page cache, running a method in a child process with its
peak RSS seen from outside, and the small helpers of their reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def run_child(cmd: list[str], workdir: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one measuring child; its last stdout line is a JSON object with `peak_mb` (getrusage).

    Adds `wall` (seconds, start to exit), `polled_mb` (psutil, every 50 ms), `rusage_mb` and
    `peak_mb` (the larger). A child that fails gives {"error": its last line naming an Error, "wall",
    "peak_mb"}. It runs in a private folder under `workdir`: DuckDB spills an in-memory database to
    the relative `.tmp`, which another tool cleaning `<workdir>/.tmp` would delete under a running
    child, and which must not land in the repo. Output goes to files, not pipes: a progress bar
    must not fill a pipe nobody reads yet.
    """
    cwd = Path(tempfile.mkdtemp(prefix=".run-", dir=workdir))
    start = time.perf_counter()
    try:
        with open(cwd / "stdout", "w+b") as stdout, open(cwd / "stderr", "w+b") as stderr:
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=stdout, stderr=stderr, env=env)
            polled = poll_peak_rss(proc)
            proc.wait()
            wall = time.perf_counter() - start
            stdout.seek(0)
            stderr.seek(0)
            out_text, err_text = (f.read().decode(errors="replace").replace("\r", "\n") for f in (stdout, stderr))
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    if proc.returncode != 0:
        lines = err_text.strip().splitlines() or [f"exit {proc.returncode}"]
        error = next((x for x in reversed(lines) if "Error" in x), lines[-1])
        return {"error": error.strip(), "wall": wall, "peak_mb": polled / MB}
    result: dict[str, Any] = json.loads(out_text.strip().splitlines()[-1])
    result.update(wall=wall, polled_mb=polled / MB, rusage_mb=result["peak_mb"],
                  peak_mb=max(result["peak_mb"], polled / MB))
    return result


def remove(path: Path) -> None:
    """A method's output, file or folder."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")
