"""Reading recorded runs: what `reproduce` compares and what `diff` shows."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf import DictConfig, OmegaConf

from runner.errors import ConfigError, GtrunError, RecordError

COMPARED = ("query.sql", "manifest.jsonl", "template.liquid", "label-categories.json")
CONFIG = ".hydra/config.yaml"  # the resolved config Hydra recorded, in the run directory


@dataclass(frozen=True)
class Run:
    """A recorded run directory."""

    dir: Path

    @classmethod
    def at(cls, path: str | Path) -> Run:
        run = cls(Path(path))
        if not run.dir.exists():
            raise RecordError(f"{run.dir}: no such folder")
        if run.dir.is_file():  # a file of the run, say .hydra/config.yaml: the run is the folder above
            above = next((p for p in run.dir.parents if (p / CONFIG).is_file()), None)
            raise RecordError(f"{run.dir}: a file, not a run directory"
                              + (f"; the run is {above}" if above is not None else ""))
        for name in (CONFIG, ".hydra/overrides.yaml"):
            if not (run.dir / name).is_file():
                sweep = any((p / CONFIG).is_file() for p in run.dir.glob("*")) if run.dir.is_dir() else False
                raise RecordError(f"{run.dir}: not a recorded gtrun run ({name} is missing)"
                                  + ("; it is a sweep: give one of its members" if sweep else ""))
        return run

    def overrides(self) -> list[str]:
        found = self.read_yaml(".hydra/overrides.yaml") or []
        if not isinstance(found, list):
            raise RecordError(f"{self.dir / '.hydra/overrides.yaml'}: not a list of overrides")
        return [str(o) for o in found]

    def config(self) -> Any:
        found = self.read_yaml(CONFIG, OmegaConf.load)  # OmegaConf's YAML rules, as Hydra wrote it
        if not isinstance(found, DictConfig):
            raise RecordError(f"{self.dir / CONFIG}: not a mapping of config keys")
        return found

    def read_yaml(self, name: str, load: Callable[[Any], Any] = yaml.safe_load) -> Any:
        """A recorded YAML file's value (read by `load`); a file that is not YAML is a RecordError
        naming its line."""
        try:
            with open(self.dir / name, encoding="utf-8") as src:
                return load(src)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise RecordError(f"{self.dir / name}{line}: not YAML ({getattr(exc, 'problem', None) or exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RecordError(f"{self.dir / name}: cannot read it ({exc})") from None

    def read_json(self, name: str) -> dict[str, Any]:
        """A recorded JSON file (request.json, job.json, lineage.json, status.json) as a mapping."""
        try:
            found = json.loads((self.dir / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecordError(f"{self.dir}: {name} is missing") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RecordError(f"{self.dir / name}: cannot read it ({exc})") from None
        except ValueError as exc:
            raise RecordError(f"{self.dir / name}: not JSON ({exc})") from None
        if not isinstance(found, dict):
            raise RecordError(f"{self.dir / name}: not a JSON object")
        return found

    def job_name(self) -> str:
        """The name of the labeling job the run created. A run whose job was not created (it failed
        before or at CreateLabelingJob: job.json is written once the job exists) has none."""
        if not (self.dir / "job.json").is_file():
            maybe = self.maybe_submitted()
            if maybe is not None:  # asking for its job says whether it was made
                return maybe
            status = self.read_json("status.json") if (self.dir / "status.json").is_file() else {}
            error, how = status.get("error"), status.get("status")
            if how == "failed" and isinstance(error, str) and error:  # the run's own error, as it said it
                why = f"; it failed: {error}"
            elif how in ("interrupted", "terminated"):
                why = f"; it was {how} before it submitted"
            else:
                why = " (its CreateLabelingJob failed: see status.json)" if (self.dir / "request.json").is_file() else ""
            raise RecordError(f"{self.dir}: the run created no labeling job{why}")
        name = self.read_json("job.json").get("LabelingJobName") or self.read_json("request.json").get("LabelingJobName")
        if not isinstance(name, str):
            raise RecordError(f"{self.dir / 'job.json'}: no LabelingJobName")
        return name

    def settings(self) -> Any:
        """The recorded config as gtrun's dataclasses."""
        from runner.config import to_settings
        from runner.schema import GtrunConfig

        try:
            settings = to_settings(self.laid_on(OmegaConf.structured(GtrunConfig)))
        except ConfigError as exc:  # a value the schema takes but gtrun's rules do not
            raise RecordError(f"{self.dir / CONFIG}: {exc}") from None
        # the local backend's storage as the run saw it: a relative root is the folder it was started in's
        started = self.started_in()
        if started is not None and not Path(settings.backend.root).expanduser().is_absolute():
            settings.backend.root = str(started / settings.backend.root)
        # the endpoints the job was reached at, unless the environment names others now (boto3's
        # variables: a local stand-in restarted on another port, a proxy)
        for service in ("s3", "athena", "sagemaker"):
            moved = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}")
            if moved:
                setattr(settings.backend.endpoints, service, moved)
        return settings

    def started_in(self) -> Path | None:
        """The folder the run was started in, where it is now: the one Hydra recorded (hydra.runtime.cwd
        in .hydra/hydra.yaml) while the run is in it; else, the project moved or renamed with its
        runs, the folder of the `outputs` folder the run is in; else the recorded one, if any."""
        here = self.dir.resolve()
        cwd = _dig_or(self.runtime(), ("cwd",))
        recorded = Path(cwd) if isinstance(cwd, str) and Path(cwd).is_absolute() else None
        if recorded is not None and here.is_relative_to(recorded.resolve()):
            return recorded
        outputs = next((p for p in here.parents if p.name == "outputs"), None)
        return outputs.parent if outputs is not None else recorded

    def maybe_submitted(self) -> str | None:
        """The job name of a run stopped while its job was submitted, whose job may exist unrecorded
        (no job.json; its status.json says "submitting", or, recorded before that key, any run
        interrupted after its request was written); else None."""
        if (self.dir / "job.json").is_file() or not (self.dir / "status.json").is_file():
            return None
        status = self.read_json("status.json")
        if status.get("status") not in ("interrupted", "terminated") or not status.get("submitting", True) \
                or not (self.dir / "request.json").is_file():
            return None
        name = self.read_json("request.json").get("LabelingJobName")
        return name if isinstance(name, str) else None

    def relocated(self, recorded: str) -> Path:
        """A path the run recorded as it was then (absolute) where it is now: one inside the folder the
        run was started in moved with it, when the project was moved, renamed or copied with its runs
        (see started_in); any other is as recorded."""
        path = Path(recorded)
        cwd = _dig_or(self.runtime(), ("cwd",))
        now = self.started_in()
        if isinstance(cwd, str) and now is not None and path.is_absolute() and path.is_relative_to(cwd):
            return now / path.relative_to(cwd)
        return path

    def continues(self) -> Path | None:
        """The run this one continues (gtrun continue: lineage.json's `continues`), where it is now."""
        recorded = self.lineage().get("continues") if (self.dir / "lineage.json").is_file() else None
        return self.relocated(recorded) if isinstance(recorded, str) and recorded else None

    def lineage_here(self) -> dict[str, Any]:
        """lineage.json with the source files and assets it names where they are now: those inside the
        folder the run was started in moved with it (see relocated), so that a run and its
        reproduction after a move name the same files."""
        lineage = self.lineage()
        for key in ("source_files", "asset_files"):
            if isinstance(lineage.get(key), dict):
                lineage[key] = {str(self.relocated(path)): sha for path, sha in lineage[key].items()}
        return lineage

    def runtime(self) -> Any:
        """What Hydra recorded of the run's start (hydra.runtime in .hydra/hydra.yaml), or None."""
        found = self.read_yaml(".hydra/hydra.yaml") if (self.dir / ".hydra/hydra.yaml").is_file() else None
        return _dig_or(found, ("hydra", "runtime"))

    def laid_on(self, base: DictConfig) -> DictConfig:
        """`base` with the recorded config merged on top. A recorded value that does not fit gtrun's
        config (a run recorded by an earlier gtrun, or an edited file) is a RecordError naming the
        file, the key and the value."""
        from omegaconf.errors import OmegaConfBaseException

        try:
            merged = OmegaConf.merge(base, self.config())
        except OmegaConfBaseException as exc:
            recorded = OmegaConf.to_container(self.config(), resolve=False)
            key = _misfit(base, recorded) if isinstance(recorded, dict) else None
            where = f"{'.'.join(key)} = {_dig(recorded, key)!r}: " if key else ""
            raise RecordError(f"{self.dir / CONFIG}: {where}{str(exc).splitlines()[0]}; this gtrun does not read it "
                              "(recorded by an earlier gtrun?): `gtrun run` with the overrides in "
                              ".hydra/overrides.yaml starts the job anew") from None
        assert isinstance(merged, DictConfig)  # merged into a mapping: a mapping
        return merged

    def config_dirs(self) -> list[str]:
        """`--config-dir DIR` for the config folder the run was composed with besides gtrun's own
        (Hydra records it in .hydra/hydra.yaml); a folder that is gone is a RecordError."""
        runtime = self.runtime()
        for source in (runtime.get("config_sources") if isinstance(runtime, dict) else None) or []:
            if isinstance(source, dict) and source.get("provider") == "command-line" and source.get("schema") == "file":
                recorded = str(source.get("path"))
                # one inside the project moved with it; else it is where it was
                found = next((d for d in (self.relocated(recorded), Path(recorded)) if d.is_dir()), None)
                if found is None:
                    raise RecordError(f"{self.dir}: its config folder {recorded} (--config-dir) is gone")
                return ["--config-dir", str(found)]
        return []

    def continuations(self) -> list[Path]:
        """The runs that continue this one (their lineage.json says so), under the outputs folder
        this run is in (else ./outputs)."""
        root = next((p for p in self.dir.resolve().parents if p.name == "outputs"), Path("outputs"))
        me = self.dir.resolve()
        found = []
        for lineage in sorted(root.glob("**/lineage.json")):
            with contextlib.suppress(OSError, ValueError, AttributeError, GtrunError):
                continued = Run(lineage.parent).continues()  # where it is now: the project may have moved
                if continued is not None and continued.resolve() == me:
                    found.append(lineage.parent)
        return found

    def lineage(self) -> dict[str, Any]:
        if not (self.dir / "lineage.json").is_file():
            raise RecordError(f"{self.dir}: the run did not finish (lineage.json is missing)")
        return self.read_json("lineage.json")


def _misfit(base: DictConfig, recorded: dict[Any, Any], path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The key path of the first recorded value (under `path`) that does not merge into `base`: each
    key's value is merged alone, and a mapping that does not fit is searched for the value inside it
    (OmegaConf's own error names no key when a list meets a mapping)."""
    from omegaconf.errors import OmegaConfBaseException

    for key, value in recorded.items():
        here = (*path, str(key))
        probe: Any = value
        for name in reversed(here):
            probe = {name: probe}
        try:
            OmegaConf.merge(base, probe)
        except OmegaConfBaseException:
            return (_misfit(base, value, here) if isinstance(value, dict) else None) or here
    return None


def _dig_or(value: Any, path: tuple[str, ...]) -> Any:
    """The value at the key path in nested mappings, or None where one is missing or not a mapping."""
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    """The value at the key path in nested mappings."""
    for key in path:
        value = value[key]
    return value


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as {dotted.key: leaf}.

    >>> flatten({"a": {"b": 1, "c": [2, {"d": 3}]}})
    {'a.b': 1, 'a.c[0]': 2, 'a.c[1].d': 3}
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out if out or not prefix else {prefix: []}
    return {prefix: value}


class _Absent:
    """A key one config has and the other has not (shown as `(absent)`, unlike a null)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


def config_changes(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every key whose value differs; ABSENT where a config
    lacks the key.

    >>> config_changes({"source": {"limit": None, "entity": None}}, {"source": {"limit": 5}})
    [('source.entity', None, (absent)), ('source.limit', None, 5)]
    """
    fa, fb = flatten(a), flatten(b)
    return [(key, fa.get(key, ABSENT), fb.get(key, ABSENT)) for key in sorted(set(fa) | set(fb))
            if fa.get(key, ABSENT) != fb.get(key, ABSENT)]


# resolvers whose value is the environment's when the config is resolved (OmegaConf's and Hydra's)
_ENVIRONMENT = ("${oc.env:", "${now:", "${hydra:")


def environment_keys(config: Any) -> list[tuple[str, str]]:
    """(key, recorded value) of each key of a recorded config whose value reads the environment
    (a variable, the clock, Hydra's runtime): a run's config resolved later gives today's value.

    >>> environment_keys(OmegaConf.create({"a": {"b": "${oc.env:B,1}", "c": "${a.b}"}, "d": "x"}))
    [('a.b', '${oc.env:B,1}')]
    """
    found = OmegaConf.to_container(config, resolve=False)
    return [(key, value) for key, value in flatten(found).items()
            if isinstance(value, str) and any(r in value for r in _ENVIRONMENT)]


def artifact_changes(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(artifact, sha256 in a, sha256 in b) for the compared artifacts, the request and the data."""
    rows: list[tuple[str, str | None, str | None]] = []
    for name in COMPARED:
        rows.append((name, a.get("artifacts", {}).get(name), b.get("artifacts", {}).get(name)))
    rows.append(("request.json (minus its name)", a.get("request_normalized_sha256"),
                 b.get("request_normalized_sha256")))
    files = sorted(set(a.get("source_files", {})) | set(b.get("source_files", {})))
    for f in files:
        rows.append((f"source file {f}", a.get("source_files", {}).get(f), b.get("source_files", {}).get(f)))
    if "asset_files" in a and "asset_files" in b:  # the images a job shows (runs recorded before: not compared)
        for f in sorted(set(a["asset_files"]) | set(b["asset_files"])):
            rows.append((f"asset {f}", a["asset_files"].get(f), b["asset_files"].get(f)))
    return rows


def resolved(config: Any) -> dict[str, Any]:
    """The config with its interpolations resolved (gtrun's resolvers must be registered)."""
    value = OmegaConf.to_container(config, resolve=True, enum_to_str=True)
    assert isinstance(value, dict)
    # to_container types a dict's keys as any DictKeyType; a gtrun config's keys are its fields' names
    return cast("dict[str, Any]", value)
