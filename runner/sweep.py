"""Multirun sweeps: each member writes status.json; the summary table is built from those files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.errors import RecordError
from runner.record import Run

STATUS = "status.json"
last_summary: list[dict[str, Any]] | None = None  # the latest sweep's members, for the exit code


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{STATUS}.part"
    tmp.write_text(json.dumps(status, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(run_dir / STATUS)


def read_statuses(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every member's status, in job order (members that died before writing one are reported too)."""
    rows = []
    for member in sorted((p for p in sweep_dir.iterdir() if p.is_dir()),
                         key=lambda p: (int(p.name.split("_")[0]) if p.name.split("_")[0].isdigit() else 1 << 30, p.name)):
        path = member / STATUS
        if path.is_file():
            row = json.loads(path.read_text(encoding="utf-8"))
        elif (member / ".hydra").is_dir():
            row = {"run_dir": str(member), "status": "failed", "error": "no status recorded"}
        else:
            continue
        row["overrides"] = _overrides(member)
        rows.append(row)
    return rows


def _overrides(member: Path) -> list[str]:
    """The member's task overrides (Hydra's .hydra/overrides.yaml), or none when unreadable."""
    try:
        return Run(member).overrides()
    except RecordError:
        return []


def summary_table(rows: list[dict[str, Any]]) -> Table:
    """One row per member: what the sweep varied for it (the overrides not shared by every member),
    its dataset, objects, cost, job name and status."""
    shared = set.intersection(*(set(r.get("overrides", [])) for r in rows)) if rows else set()
    table = Table(title="sweep summary")
    for col in ("swept", "dataset", "objects", "cost (USD)", "job name", "status"):
        table.add_column(col, justify="right" if col in ("objects", "cost (USD)") else "left", overflow="fold")
    for r in rows:
        status: str | Text = r.get("status", "?")
        if status == "failed":
            status = Text.assemble(("failed", "red"), f": {str(r.get('error', '')).splitlines()[0]}")
        swept = " ".join(o for o in r.get("overrides", []) if o not in shared)
        table.add_row(swept, str(r.get("dataset", "")), str(r.get("objects", "")), str(r.get("cost_usd", "")),
                      str(r.get("job_name", "")), status)
    return table


class SweepSummary(Callback):
    """Prints the summary table and writes summary.json in the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        global last_summary
        rows = last_summary = read_statuses(sweep_dir)
        if not rows:  # `plan -m`: its members record nothing
            return
        write_status(sweep_dir, {"members": rows,
                                 "failed": sum(r.get("status") == "failed" for r in rows)})
        (sweep_dir / STATUS).replace(sweep_dir / "summary.json")
        Console(stderr=True, markup=False, width=width_for(sys.stderr)).print(summary_table(rows))


def width_for(stream: Any) -> int | None:
    """A console's width: None on a terminal (rich reads its size, or COLUMNS); in a pipe or a file
    200, where rich would fold tables at 80 columns and split the paths and job names in them."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return None if terminal or "COLUMNS" in os.environ else 200
