"""Multirun sweeps: each member writes status.json; the summary table is built from those files."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.errors import RecordError
from runner.record import Run

STATUS = "status.json"
last_summary: list[dict[str, Any]] | None = None  # the latest sweep's members, for the exit code
# the sweep under way: its folder and its members' overrides (planned_members), for `interrupted`
current: tuple[Path, list[list[str]] | None] | None = None


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{STATUS}.part"
    tmp.write_text(json.dumps(status, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(run_dir / STATUS)


def write_summary(sweep_dir: Path, rows: list[dict[str, Any]], **more: Any) -> None:
    """The sweep's summary.json: its members' statuses (read_statuses), how many failed, and `more`."""
    write_status(sweep_dir, {"members": rows, "failed": sum(r.get("status") == "failed" for r in rows), **more})
    (sweep_dir / STATUS).replace(sweep_dir / "summary.json")


def read_statuses(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every member's status, in job order (members that died before writing one are reported too)."""
    rows = []
    for member in sorted((p for p in sweep_dir.iterdir() if p.is_dir()),
                         key=lambda p: (int(p.name.split("_")[0]) if p.name.split("_")[0].isdigit() else 1 << 30, p.name)):
        path = member / STATUS
        if path.is_file():
            row = json.loads(path.read_text(encoding="utf-8"))
        elif (member / "job.json").is_file():  # stopped once its job was recorded, before its status was
            job = json.loads((member / "job.json").read_text(encoding="utf-8"))
            row = {"run_dir": str(member), "status": "submitted", "job_name": job.get("LabelingJobName", "")}
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


def planned_members(config: DictConfig) -> list[list[str]] | None:
    """Each member's overrides, in launch order, as Hydra's basic sweeper makes them from a sweep's
    config (multirun.yaml): the product of the swept values. None for another sweeper, or a sweep
    this cannot expand (a range, a glob of a group's options)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if not str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).endswith("BasicSweeper"):
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    task = OmegaConf.select(config, "hydra.overrides.task", default=None) or []
    args = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in task]
    by_key: dict[str, list[str]] = {}  # a key given twice: the last one, as the sweeper does
    try:
        for o in OverridesParser.create().parse_overrides(args):
            key = o.get_key_element()
            if not o.is_sweep_override():
                by_key[key] = [f"{key}={o.get_value_element_as_str()}"]
            elif o.is_discrete_sweep():
                by_key[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
            else:
                return None
    except HydraException:
        return None
    return [list(x) for x in itertools.product(*by_key.values())]


def swept(members: list[list[str]]) -> list[list[str]]:
    """Each member's overrides without those every member shares: what the sweep varied."""
    shared = set.intersection(*(set(m) for m in members)) if members else set()
    return [[o for o in m if o not in shared] for m in members]


def not_launched(planned: list[list[str]], launched: list[list[str]]) -> list[dict[str, Any]]:
    """The planned members (planned_members) that none of the `launched` overrides is: their number,
    overrides and what the sweep varied for them (`swept`)."""
    names = swept(planned)
    return [{"num": i, "overrides": m, "swept": names[i]} for i, m in enumerate(planned) if m not in launched]


def interrupted(how: str) -> str | None:
    """Record the sweep under way as cut short (summary.json: its members, `interrupted` and the
    members `not_launched`) and say what it leaves: the jobs its members created, which keep
    running, and how to stop them. None when no sweep was under way."""
    if current is None or not current[0].is_dir():
        return None
    sweep_dir, planned = current
    rows = read_statuses(sweep_dir)
    launched = [r.get("overrides", []) for r in rows]
    missing = not_launched(planned or [], launched)
    write_summary(sweep_dir, rows, interrupted=how, **({"planned": len(planned)} if planned is not None else {}),
                  not_launched=missing)
    made = [r for r in rows if (Path(r["run_dir"]) / "job.json").is_file()]
    # a member cut short at CreateLabelingJob by a second signal: its job may exist, unrecorded
    maybe = {r["run_dir"]: name for r in rows if (name := Run(Path(r["run_dir"])).maybe_submitted()) is not None}
    of = f" of {len(planned)}" if planned is not None else ""
    one = len(made) == 1
    said = f"{how}: {len(made)}{of} job{'' if one else 's'} of this sweep {'was' if one else 'were'} created"
    if made:
        said += f" and run{'s' if one else ''} until {'it ends' if one else 'they end'}, or gtrun stop {sweep_dir}"
    for run_dir, name in maybe.items():
        said += f"; {Path(run_dir).name} was cut short at CreateLabelingJob: its job {name} may exist (gtrun stop {run_dir})"
    # the member under way, stopped before it submitted: launched, but with no job
    stopped = [Path(r["run_dir"]).name for r in rows if r["run_dir"] not in maybe
               and r.get("status") in ("interrupted", "terminated") and not (Path(r["run_dir"]) / "job.json").is_file()]
    if stopped:
        said += f"; stopped before {'it' if len(stopped) == 1 else 'they'} submitted: {', '.join(stopped)}"
    if missing:
        said += "; not launched: " + ", ".join(" ".join(m["swept"]) or f"#{m['num']}" for m in missing)
    return said + f"\nthe sweep is recorded in {sweep_dir / 'summary.json'}"


class SweepSummary(Callback):
    """Prints the summary table and writes summary.json in the sweep directory."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global current
        current = (Path(config.hydra.sweep.dir), planned_members(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global current
        current = None
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        global last_summary
        rows = last_summary = read_statuses(sweep_dir)
        if not rows:  # `plan -m`: its members record nothing
            return
        write_summary(sweep_dir, rows)
        Console(stderr=True, markup=False, width=width_for(sys.stderr)).print(summary_table(rows))


def width_for(stream: Any) -> int | None:
    """A console's width: None on a terminal (rich reads its size, or COLUMNS); in a pipe or a file
    200, where rich would fold tables at 80 columns and split the paths and job names in them."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return None if terminal or "COLUMNS" in os.environ else 200
