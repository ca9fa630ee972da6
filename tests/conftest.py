"""Shared fixtures: run the real `gtrun` command in a scratch working directory."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Gtrun:
    """`gtrun` in a subprocess, working in `cwd`, with storage kept under it."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.storage = cwd / "storage"

    def __call__(self, *args: str, storage: bool = True, timeout: float = 240, columns: int | None = 200,
                 env: dict[str, str | None] | None = None) -> Result:
        """`columns`: the COLUMNS the command sees (None: none, as in a pipe of a shell without it);
        `env`: environment variables to set (None: to unset)."""
        args_list = list(args)
        if storage and args_list and args_list[0] in ("run", "plan"):
            args_list.append(f"backend.root={self.storage}")
        proc = subprocess.run([sys.executable, "-m", "runner", *args_list], cwd=self.cwd,
                              capture_output=True, text=True, timeout=timeout,
                              env={k: v for k, v in {**_env(), "COLUMNS": str(columns), **(env or {})}.items()
                                   if v is not None and (columns is not None or k != "COLUMNS")})
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def runs(self, every: bool = False) -> list[Path]:
        """The run directories of finished runs (lineage.json), or `every` one (its config)."""
        marker = ".hydra/config.yaml" if every else "lineage.json"
        return sorted(p.parent.parent if every else p.parent for p in (self.cwd / "outputs").rglob(marker))

    def jobs(self) -> list[str]:
        from runner.service.store import JobStore

        db = self.storage / ".gtrun" / "labeling.sqlite3"
        return JobStore(db).job_names() if db.exists() else []

    def stored_objects(self) -> list[Path]:
        return sorted(p for p in self.storage.rglob("*") if p.is_file() and ".gtrun" not in p.parts)


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "GTRUN_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def gtrun(tmp_path: Path) -> Gtrun:
    return Gtrun(tmp_path)


def shape(value):
    """The JSON skeleton of a value: keys kept, leaves replaced by their type name."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def real_file(name: str) -> Path:
    """A file Ground Truth wrote (tests/data/real-outputs, a copy of shared/reference/real-outputs)."""
    path = ROOT / "tests" / "data" / "real-outputs" / name
    if not path.exists():
        raise FileNotFoundError(f"real output {name} is not in tests/data/real-outputs")
    return path


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, with the settings `gtrun preview` uses."""
    from playwright import sync_api

    from runner.preview import CHROMIUM_ARGS, chromium_path

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
