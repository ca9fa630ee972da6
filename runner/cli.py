"""gtrun's command line: `run` and `plan` are Hydra apps; `reproduce` and `diff` read run directories.

This module wires and translates errors, nothing else: every step lives in runner.pipeline.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner import __version__, sweep
from runner.config import CONF_DIR, meant, no_such_key, setup, to_settings, unremovable
from runner.errors import ConfigError, GtrunError, RecordError
from runner.io.store import LocalStore
from runner.record import COMPARED, CONFIG, Run, artifact_changes, config_changes, environment_keys, resolved
from runner.schema import BackendConfig, BackendKind, GtrunConfig
from runner.service import DEFAULT_PORT
from runner.service.store import TERMINAL
from runner.sweep import STATUS, write_status

if TYPE_CHECKING:
    from runner.pipeline import Outcome, Pipeline

log = logging.getLogger("gtrun")

# a path or command stays one line, to copy
console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, width=sweep.width_for(sys.stderr))
out = Console(highlight=False, soft_wrap=True, markup=False, width=sweep.width_for(sys.stdout))

USAGE = """\
usage: gtrun <verb> [options] [key=value ...]

verbs:
  run        compose the config, build and submit the job, record the run
  plan       all up to submit, nothing submitted: SQL, count, request, cost
  reproduce  a new job from a recorded run, checked to match it
  diff       the config keys and artifacts that differ between two runs
  serve      the local labeling service: SageMaker's job API and worker UI
  status     a run's job status and label counters (--wait: until it ends)
  preview    the template rendered with real rows, saved as PNG screenshots
  stop       stop a run's labeling job
  jobs       the backend's recent labeling jobs, with their runs
  workteams  the account's workteams (to fill workteam.arn)
  collect    a finished job's output -> dataset/, report.html, README card
  continue   a new job for the objects a finished run's job did not label

`gtrun run --help` lists the config groups, `gtrun <verb> --help` each verb.
Hydra's overrides work as usual: key=value, group=option, +key=value, ~key,
-m, --cfg job, --config-dir DIR.
"""

ENV_VERB = "GTRUN_VERB"
ENV_REPRODUCE = "GTRUN_REPRODUCE"
ENV_ROWS = "GTRUN_PREVIEW_ROWS"
ENV_CONTINUE = "GTRUN_CONTINUE"


def fail(message: str, code: int = 2) -> int:
    console.print(Text.assemble(("error:", "bold red"), f" {message}"))
    return code


# -- run / plan (Hydra) ---------------------------------------------------------------------------

class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it cleans up as after Ctrl+C."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def task(cfg: DictConfig) -> None:
    """One labeling job (a member of a sweep, or the whole run); Hydra calls it, maybe in a worker."""
    from runner.pipeline import Pipeline  # the job's modules (sqlglot, liquid, ...), which collect does not need

    verb = os.environ.get(ENV_VERB, "run")
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    reproduce_of = os.environ.get(ENV_REPRODUCE)
    # the verb the user gave: reproduce and continue run as `run` with their run named in the environment
    given = "reproduce" if reproduce_of else "continue" if os.environ.get(ENV_CONTINUE) else verb
    status: dict[str, Any] = {"run_dir": str(run_dir), "verb": given}
    pipe: Pipeline | None = None
    try:
        if reproduce_of:
            cfg = _lay_recorded(cfg, Run.at(reproduce_of), run_dir)
        settings = to_settings(cfg)
        _warn_preset_template(hc.runtime.choices, list(hc.overrides.task))
        status["dataset"] = settings.source.name
        pipe = Pipeline(settings, resolved(cfg), now=datetime.now(), console=console,
                        recorded=bool(reproduce_of or os.environ.get(ENV_CONTINUE)))
        if verb == "plan":
            outcome = pipe.plan()
            show_plan(outcome)
        elif verb == "preview":
            shots = preview_rows(pipe, settings, int(os.environ.get(ENV_ROWS, "3")))
            out.print(f"{len(shots)} preview(s): " + ", ".join(str(p) for p in shots))
            return
        else:
            continues = os.environ.get(ENV_CONTINUE)
            if continues:
                from runner.collect.collect import unlabeled_lines

                outcome = pipe.run(run_dir, continued=(continues, unlabeled_lines(Path(continues))))
            elif reproduce_of:
                original = Run.at(reproduce_of)
                outcome = pipe.run(run_dir, before_submit=lambda lineage: compare_runs(original, lineage, cfg, run_dir),
                                   before_upload=lambda assets: compare_assets(original, assets))
            else:
                outcome = pipe.run(run_dir)
            show_run(outcome, run_dir, pipe.service_url, settings.backend)
        status.update(status="planned" if verb == "plan" else outcome.job.get("LabelingJobStatus", "submitted"),
                      objects=outcome.objects, cost_usd=str(outcome.cost.total_usd), job_name=outcome.job_name)
        if reproduce_of:
            out.print(Text.assemble(("reproduced exactly", "bold green"), ": " + ", ".join(COMPARED) + ", request"))
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl+C)"
        log.error("%s", how)
        if verb == "run":  # a job CreateLabelingJob made is recorded first (pipeline.deferred_signals)
            made = (run_dir / "job.json").is_file()
            # a second signal: the job may exist, unrecorded (the local backend's store says when it
            # does not: a creation cut short rolls back)
            maybe = pipe.name if not made and pipe is not None and pipe.submitting and pipe.job_made() is not False else None
            if made:
                said = f"{how} after the job was created: it runs until it ends or gtrun stop {run_dir}"
            elif maybe is not None:
                said = (f"{how} while the job was submitted: {maybe} may have been created; "
                        f"gtrun status {run_dir} says whether, gtrun stop {run_dir} stops it")
            else:
                said = ""
            write_status(run_dir, {**status, "status": how.split()[0], "submitting": maybe is not None,
                                   "error": said or f"{how}; no job was created"})
            if said and not multirun:  # a sweep says it for all its members (sweep.interrupted)
                console.print(said)
        raise
    except GtrunError as exc:
        log.error("%s", exc)
        status.update(status="failed", error=str(exc))
        if verb == "run":
            write_status(run_dir, status)
        if not multirun:
            code = fail(str(exc))
            if verb == "run" and (run_dir / STATUS).is_file():
                console.print(f"the failed run is recorded in {run_dir}")
            sys.exit(code)
        console.print(Text.assemble((f"{status.get('dataset', run_dir.name)} failed:", "red"), f" {exc}"))
        global _members_failed
        _members_failed += 1  # plan's members record nothing: the sweep's exit code counts them here
        return
    if verb == "run":
        write_status(run_dir, status)


setup()  # resolvers and schemas, also in sweep worker processes that import this module
_app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(task)


def _warn_preset_template(choices: Any, overrides: list[str]) -> None:
    """A job preset sets the template's labels, title and instructions for its own template: say so
    when another template is picked and they are not set too (sentiment labels on receipt boxes)."""
    job, template = choices.get("job"), choices.get("template")
    path = CONF_DIR / "job" / f"{job}.yaml"
    if not job or not template or not path.is_file():
        return
    found = re.search(r"override /template: *(\S+)", path.read_text(encoding="utf-8"))
    given = {o.partition("=")[0].lstrip("+~") for o in overrides}
    if found and found.group(1) != template and "template.labels" not in given:
        console.print(Text.assemble(("warning:", "yellow"), f" template={template} with job={job}: the preset's "
                                    f"template.labels, title and instructions, written for {found.group(1)}, are kept; "
                                    "set template.labels=[...] (and the rest) for this template"))


def _lay_recorded(cfg: DictConfig, run: Run, run_dir: Path) -> DictConfig:
    """The composed config with the recorded one laid on top; saved as this run's config."""
    merged = run.laid_on(cfg)
    merged.job.labeling_job_name = None  # a new job: a name of its own
    hydra_dir = run_dir / ".hydra"
    if hydra_dir.is_dir():
        OmegaConf.save(merged, hydra_dir / "config.yaml")
    return merged


def show_plan(o: Outcome) -> None:
    out.rule("query.sql")
    out.print(o.query.sql, soft_wrap=True)
    if o.query.params:
        bound = dict(zip(o.query.param_names, o.query.params, strict=False))  # a name used twice is one value
        out.print("params: " + ", ".join(f"{n}={'NULL' if v is None else repr(v)}" for n, v in bound.items()))
    if o.first_line:
        out.rule("first manifest line")
        out.print(json.dumps(o.first_line, ensure_ascii=False), soft_wrap=True)
    out.rule("CreateLabelingJob request")
    out.print_json(json.dumps(o.request))
    out.rule("estimate")
    c = o.cost
    price = f"${c.usd_per_task}" if c.usd_per_task is not None else "no per-task price"
    workers = f"{c.workers_per_object} worker{'s' if c.workers_per_object != 1 else ''}"
    out.print(Text.assemble(f"{o.objects:,} objects x {workers} ({price}): workers ${c.worker_usd} "
                            f"+ Ground Truth fee ${c.fee_usd} = ", (f"${c.total_usd}", "bold")))
    out.print(f"job name: {o.job_name} (nothing submitted)")


def show_run(o: Outcome, run_dir: Path, service_url: str | None, backend: BackendConfig) -> None:
    status = o.job.get("LabelingJobStatus", "submitted")
    out.print(Text.assemble(("submitted", "bold green"), f" {o.job_name}: {o.objects:,} objects, "
                            f"estimated ${o.cost.total_usd}, status {status}"))
    out.print(f"run recorded in {run_dir}")
    out.print(f"manifest: {o.request['InputConfig']['DataSource']['S3DataSource']['ManifestS3Uri']}")
    aws = backend.kind is BackendKind.aws
    labeling = backend.endpoints.sagemaker if aws else service_url
    if labeling:  # gtrun's labeling service: its worker pages
        out.print(Text.assemble("workers label it at ", (f"{labeling.rstrip('/')}/jobs/{o.job_name}/", "bold")))
    elif aws:
        out.print("workers find its tasks in the labeling portal of the workteam's workforce "
                  "(gtrun workteams backend=aws shows its address)")
    else:  # no service for this storage: one on the default port may be another storage's, without this job
        command, note = serve_advice(backend.root)
        out.print(Text.assemble("to label it, start the labeling service with ", (command, "bold"),
                                f"; it prints the job's page for workers (/jobs/{o.job_name}/)"))
        if note:
            out.print(note)
    out.print(f"follow it with: gtrun status {shlex.quote(str(run_dir))} --wait")


def serve_command(root: str) -> str:
    """`gtrun serve` for a local storage root: the absolute root (`gtrun serve` alone serves
    ./outputs/storage of wherever it is started), quoted for a shell."""
    return f"gtrun serve --root {shlex.quote(str(Path(root).resolve()))}"


def serve_advice(root: str) -> tuple[str, str]:
    """The `gtrun serve` command for a storage root with no service, and a note when the default
    port has the labeling service of another storage: the command then takes any free port."""
    from runner.service.registry import served_root, url_of

    url = url_of("127.0.0.1", DEFAULT_PORT)
    there = served_root(url, timeout=1)
    if there is None or there == Path(root).resolve():
        return serve_command(root), ""
    return (f"{serve_command(root)} --port 0",
            f"({url}/ is the labeling service of another storage folder, {there}: it does not have this run's job)")


_USERINFO = re.compile(r"://[^/@\s:]+:[^/@\s]*@")  # scheme://user:password@host


def _hydra(verb: str, args: list[str]) -> int:
    """Run the Hydra app for `run` / `plan` with the user's overrides."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    for a in args:  # Hydra records every override: a password in a URL would be written to the run
        if _USERINFO.search(a):
            return fail(f"{a.split('=', 1)[0]}: a URL with a user and password; give credentials through the "
                        "environment or backend.profile (the config and its overrides are recorded with the run)")
    if multirun and (problem := _sweep_job_names(args)):
        return fail(f"job.labeling_job_name: {problem}")
    if not multirun:
        for a in args:
            if a.startswith("hydra.run.dir="):
                target = Path(_override_value(a))
                if target.exists() and any(target.iterdir()):
                    return fail(f"hydra.run.dir: {target} already exists and is not empty; "
                                "a run never overwrites another")
    extra, scratch = [], None
    if verb in ("plan", "preview"):  # these record nothing: no output dir, log to the console only
        extra = ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra.run.dir=."]
        if multirun:  # Hydra makes a sweep folder whatever: one of its own, removed after
            scratch = tempfile.mkdtemp(prefix=f"gtrun-{verb}-")
            extra = ["hydra.output_subdir=null", "hydra/job_logging=disabled", f"hydra.sweep.dir={scratch}"]
    os.environ[ENV_VERB] = verb
    try:
        hydra_args = hydra_argv(args, extra)
    except ConfigError as exc:
        return fail(str(exc))
    argv, full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = ["gtrun", *hydra_args]
    # Hydra then raises its errors (a misspelled key, a missing option) instead of printing them
    # in its own words with exit 1: hydra_problem says them as gtrun says every other error
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _app()
    except KeyboardInterrupt as exc:  # a sweep cut short: its record, and the jobs its members made
        if multirun and verb == "run":
            said = sweep.interrupted("terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl+C)")
            if said:
                console.print(said)
        raise
    except COMPOSE_ERRORS as exc:  # composing the config; an error in the task keeps its traceback
        if full_error:  # the user asked for Hydra's own report
            raise
        return fail(hydra_problem(exc, args))
    except yaml.MarkedYAMLError as exc:  # a config file that is not YAML (Hydra reads them as it composes)
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "a config file"
        return fail(f"{where}: not YAML: {exc.problem or exc.context}")
    except ValueError as exc:  # Hydra's check of its own options, before anything runs
        if not str(exc).startswith("Only one of --run, --multirun"):
            raise
        return fail(f"{exc} (-m with --cfg or --info: print the config with plan or run alone)")
    finally:
        sys.argv = argv
        if full_error is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if multirun and verb == "run":
        return _sweep_exit_code()
    return 2 if multirun and _members_failed else 0


# Hydra's own errors (ConfigCompositionException, MissingConfigException, OverrideParseException, ...):
# composing the config from the command line and the config files, and the sweeper's. An OmegaConf
# error that escapes the task is gtrun's, and keeps its traceback.
COMPOSE_ERRORS = (HydraException,)
_HYDRA_VALUED = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                 "-cd", "--experimental-rerun"}  # Hydra's options that take the argument after them
_HYDRA_INFO = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}  # --info's


def hydra_argv(args: list[str], extra: list[str]) -> list[str]:
    """The user's arguments for Hydra with gtrun's `extra` overrides: options first, then every
    override. Hydra's parser takes its overrides in one run: `source.limit=5 --cfg job x=1` would
    leave `x=1` (and gtrun's own, after it) unrecognized.

    >>> hydra_argv(["source.limit=5", "--cfg", "job", "-m", "x=1,2"], ["hydra.run.dir=."])
    ['--cfg', 'job', '-m', 'source.limit=5', 'x=1,2', 'hydra.run.dir=.']
    """
    options, overrides = [], []
    it = iter(args)
    for a in it:
        if not a.startswith("-"):
            overrides.append(a)
            continue
        options.append(a)
        if a in _HYDRA_VALUED or a in ("--info", "-i"):
            value = next(it, None)
            if value is None and a in _HYDRA_VALUED:
                raise ConfigError(a, "needs a value (e.g. --cfg job, --config-dir DIR)")
            if value is not None and (a in _HYDRA_VALUED or value in _HYDRA_INFO):
                options.append(value)
            else:  # --info alone: all of it (gtrun's own overrides must not be taken for its value)
                options.append("all")
                if value is not None:
                    overrides.append(value)
    return [*options, *overrides, *extra]


def _sweep_job_names(args: list[str]) -> str | None:
    """Why a sweep's job.labeling_job_name override would give two members one job name, or None:
    a single name, or names swept beside another key; names swept alone, distinct, are fine."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    overrides = []
    for a in args:
        if "=" in a and not a.startswith("-"):
            try:
                overrides.append(parser.parse_override(a))
            except HydraException:
                return None  # Hydra names what is wrong with it
    names = next((o for o in overrides if o.key_or_group == "job.labeling_job_name"), None)
    if names is None:
        return None
    if not names.is_sweep_override():
        return None if names.value() is None else \
            "every member of a sweep needs a job name of its own; leave it unset, or sweep distinct names"
    try:
        values = list(names.sweep_string_iterator())
    except HydraException:
        return None  # an interval or glob: Hydra says what it makes of it
    if len({v.lower() for v in values}) < len(values):  # a job's name is unique whatever its case
        return f"the names swept are not distinct: {', '.join(values)}"
    if any(o.is_sweep_override() for o in overrides if o is not names):
        return "swept beside another key, members would share a name; sweep the names alone, or leave it unset"
    return None


def hydra_problem(exc: Exception, args: list[str] | tuple[str, ...] = ()) -> str:
    """A Hydra composition error as one line naming the key or option, with the likely one meant
    (`args`: the command line's overrides, to name the one Hydra cannot parse).

    >>> from omegaconf.errors import ConfigKeyError
    >>> err = ConfigKeyError("Key 'workers_per_objekt' not in 'WorkteamConfig'")
    >>> err.full_key = "workteam.workers_per_objekt"
    >>> hydra_problem(err)
    "workteam.workers_per_objekt: no such key (did you mean 'workteam.workers_per_object'?)"
    """
    import difflib

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(exc, OverrideParseException):
        parser = OverridesParser.create()
        for arg in (a for a in args if "=" in a and not a.startswith("-")):
            try:
                parser.parse_override(arg)
            except HydraException:
                return (f"{arg}: Hydra cannot read this override (its grammar reserves brackets, braces, "
                        "commas, parentheses, quotes, !, < and others in a value): quote the value, e.g. "
                        "'key=\"a,b!\"'")
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        # an option of a list (transforms=[a,b]) comes without the group's options: the bundled ones
        options = sorted(exc.options or (p.stem for p in (CONF_DIR / group).glob("*.yaml")) if group else [])
        if not group or not options:
            return str(exc).split("\n")[0]
        close = difflib.get_close_matches(name, options, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"{group}={name}: no such option ({hint}the options: {', '.join(options)})"
    def problem(key: str, kind: str, text: str, node: Any = None) -> str:
        """`node`: the config node the key is missing from, when the error has it (its keys)."""
        if kind in ("ConfigKeyError", "ConfigAttributeError"):
            parent = key.rpartition(".")[0]
            said = f"{key}: {no_such_key(key, [str(k) for k in node.keys()] if isinstance(node, DictConfig) else None)}"
            if isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict:  # source.params, say
                given = next((a.lstrip("+") for a in args if a.lstrip("+").partition("=")[0] == key), f"{key}=...")
                said += f"; {parent} takes a new key with a +: +{given}"
            return said
        if text.endswith("does not support deletion"):  # ~key on a key of the schema
            return f"{key}: {unremovable(key)}"
        if "is not a ListConfig" in text:
            return f"{key}: takes a list, e.g. {key}=[a,b]"
        return f"{key}: {text}"

    ambiguous = re.match(r"Ambiguous value for argument '([^']+)'", str(exc))
    if ambiguous:
        return (f"{ambiguous.group(1)}: several values: run each with -m (a sweep), or give a list as "
                "key=[a,b] where the key takes one")
    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__cause__
    key = getattr(cause, "full_key", None)
    if isinstance(cause, OmegaConfBaseException) and key:
        return problem(key, type(cause).__name__, str(cause).split("\n")[0], getattr(cause, "parent_node", None))
    # a key in a config file: "In 'pricing/mine': ConfigKeyError raised while composing config:\n<text>\n  full_key: <key>"
    found = re.match(r"In '([^']+)': (\w+) raised while composing config:\n(.+)\n\s+full_key: (\S+)", str(exc))
    if found:
        where, kind, text, key = found.groups()
        said = f"{where}.yaml: {problem(key, kind, text)}"
        if where == "local/default" and key.partition(".")[0] == "local":  # its keys read under `local`
            said += "\n  hint: conf/local/default.yaml sets keys of the whole config: start it with `# @package _global_`"
        elif where.startswith("job/") and key.split(".")[:2] in (["job", f.name] for f in fields(GtrunConfig)):
            said += JOB_PACKAGE_HINT  # job.template.labels: the preset's keys read under `job`
        return said
    if re.match(r"In 'job/[^']+': Could not override '[^'@]+@job\.", str(exc)):  # its defaults, under `job` too
        return str(exc).split("\n")[0] + JOB_PACKAGE_HINT
    lines = [x for x in str(exc).splitlines() if x.strip() and not x.startswith("See https://hydra.cc")]
    return " ".join(lines[:2]) if lines else type(exc).__name__


_members_failed = 0  # sweep members that failed in this process (plan -m)
JOB_PACKAGE_HINT = ("\n  hint: a job preset sets keys of the whole config: start it with `# @package _global_`, "
                    "as conf/job/tweets_sentiment.yaml does")


def _override_value(arg: str) -> str:
    """An override's value as Hydra reads it (quotes taken off), else the text after `=`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_override(arg).value()
    except HydraException:
        return arg.split("=", 1)[1]
    return str(value)


def _sweep_exit_code() -> int:
    rows = sweep.last_summary or []
    return 2 if any(r.get("status") == "failed" for r in rows) else 0


# -- reproduce / diff -----------------------------------------------------------------------------

def reproduce(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gtrun reproduce", description="Run a recorded job again, in a new run directory and "
        "with a new job name, from its recorded overrides with its recorded config laid on top. Before it "
        "submits, it checks hash by hash that the SQL, manifest, template, label config and request (minus "
        "the job name) are identical; if any differs, nothing is submitted.")
    parser.add_argument("run", help="a recorded run directory (outputs/runs/...)")
    parser.add_argument("overrides", nargs="*", help="Hydra's own overrides only, e.g. hydra.run.dir=...")
    parser.usage = "gtrun reproduce RUN [hydra.key=value ...]"
    if not args:  # argparse would name the optional overrides as required too
        parser.error("the following argument is required: run")
    ns = parser.parse_args(args)
    # the recorded config is laid over the composed one: any other key given here would be recorded
    # with the new run, but not used
    other = [o for o in ns.overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    if other:
        return fail(f"{other[0]}: reproduce runs the recorded config as it was, so it would not apply; "
                    "to change it, make a new run: gtrun run with the run's overrides and yours")
    return _rerun(ns.run, ns.overrides, ENV_REPRODUCE)


def continue_cmd(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gtrun continue", description="Start a new job for the objects a finished run's job did not "
        "label (failed, expired, or left when it was stopped): Ground Truth cannot restart a stopped job. "
        "The new run has the recorded config and its own run directory.")
    parser.add_argument("run", help="a recorded run whose job has ended")
    parser.add_argument("overrides", nargs="*", help="extra overrides, e.g. workteam.workers_per_object=2")
    parser.usage = "gtrun continue RUN [key=value ...]"
    if not args:  # argparse would name the optional overrides as required too
        parser.error("the following argument is required: run")
    ns = parser.parse_args(args)
    # its objects come from the run's output, not from a query: a source key would be recorded, not used
    source = next((o for o in ns.overrides if o.lstrip("+~").partition("=")[0].partition(".")[0] in ("source", "job")
                   and not o.lstrip("+~").startswith("job.labeling_job_name")), None)
    if source is not None:
        return fail(f"{source}: continue labels the objects the run's job did not label, read from its output, "
                    "so the source does not apply; to label other objects, make a new run")
    return _rerun(ns.run, ns.overrides, ENV_CONTINUE)


def _rerun(path: str, extra: list[str], mode: str) -> int:
    """`run` again from a recorded run's overrides (plus `extra`), in the given mode (reproduce,
    continue): with the config folders it was composed from, and a new job name."""
    try:
        run = Run.at(path)
        overrides = [o for o in run.overrides() if not o.startswith(("hydra.", "hydra/"))]
        run.settings()  # a recorded config this gtrun cannot read is refused before a new run starts
        project = run.started_in()
        if project is not None and Path.cwd().resolve() != project.resolve():
            # the new run and its job go beside it, in its storage, where `continue` looks for them
            verb = "reproduce" if mode == ENV_REPRODUCE else "continue"
            raise RecordError(f"{run.dir} was started in {project}: {verb} it there "
                              f"(cd {shlex.quote(str(project))}), so the new run and its job go beside it")
        if mode == ENV_REPRODUCE:
            run.lineage()  # the hashes it is checked against: a run that did not finish has none
            continues = run.continues()
            if continues is not None:
                raise RecordError(f"{run.dir} continues {continues}: its objects came from that run's "
                                  "output, not from its query, so there is nothing to reproduce; "
                                  f"`gtrun reproduce {continues}` reproduces the run it continues, "
                                  f"`gtrun continue {run.dir}` labels what this one left")
        else:
            later = run.continuations()
            if later:
                raise RecordError(f"{run.dir} was continued already by {later[0]}: continue that run "
                                  "instead (its job has what this one left)")
            _something_left(run)
        config_dirs = run.config_dirs()
    except GtrunError as exc:
        return fail(str(exc))
    if mode == ENV_CONTINUE and not any(o.partition("=")[0] == "job.labeling_job_name" for o in extra):
        extra = [*extra, "job.labeling_job_name=null"]  # a new job: a name of its own
    os.environ[mode] = str(run.dir.resolve())
    try:
        return _hydra("run", [*config_dirs, *overrides, *extra])
    finally:
        os.environ.pop(mode, None)


def _something_left(run: Run) -> None:
    """Raise unless the run's job ended with objects left to label (its counters say so): before a
    run directory is made for a continuation that would fail (a job still running, or every object
    labeled)."""
    name, settings = run.job_name(), run.settings()
    with _labeling(settings, recorded=True) as service:
        job = service.describe_labeling_job(name)
    if job["LabelingJobStatus"] not in TERMINAL:
        raise RecordError(f"{name} is {job['LabelingJobStatus']}: Ground Truth writes its output manifest when "
                          "the job ends; stop it first (gtrun stop)")
    c = job["LabelCounters"]
    if not c.get("Unlabeled", 0) + c.get("FailedNonRetryableError", 0):
        raise RecordError(f"{run.dir}: its job labeled every object; nothing to continue")


def compare_runs(original: Run, b: dict[str, Any], config: Any, run_dir: Path) -> None:
    """Print the hash-by-hash comparison of the original run with this one (its lineage `b` and
    config, before it submits); raise when anything differs."""
    a = original.lineage_here()
    table = Table(title=f"reproduce {original.dir.name} -> {run_dir.name}")
    for col in ("artifact", "original", "reproduced", ""):
        table.add_column(col)
    changed: list[str] = []
    files: list[str] = []
    for name, ha, hb in artifact_changes(a, b):
        same = ha == hb
        if not same:  # data files: named, judged by the manifest they make (assets: by compare_assets, before)
            (files if name.startswith("source file") else changed).append(name)
        table.add_row(name, (ha or "-")[:12], (hb or "-")[:12], Text("same", "green") if same else Text("DIFFERS", "red"))
    out.print(table)
    if changed:
        keys = [k for k in config_changes(resolved(original.config()), resolved(config))
                if k[0] != "job.labeling_job_name"]
        # the recorded text is the same: a value read from the environment then may not be now
        read = [] if keys else [f"{key} = {value} reads the environment, which may have changed"
                                for key, value in environment_keys(original.config())]
        if "template.liquid" in changed and not any(k[0].startswith("template.") for k in keys):
            files.append(f"the template file ({resolved(config)['template']['file']}: gtrun's own, or edited)")
        why = "; ".join([f"{k}: {va!r} -> {vb!r}" for k, va, vb in keys[:5]]
                        + [f"{f.removeprefix('source file ')} changed" for f in files] + read) or "no config key changed"
        raise RecordError(f"reproduce: {', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'} from "
                          f"{original.dir} ({why}); "
                          "nothing was submitted")


def compare_assets(original: Run, assets: dict[str, str]) -> None:
    """Raise when the source.assets files are not those the original run recorded (before they are
    copied to the storage; a run recorded without asset hashes is not compared)."""
    recorded = original.lineage_here().get("asset_files")
    if recorded is None:
        return
    changed = [f for f in sorted(set(recorded) | set(assets)) if recorded.get(f) != assets.get(f)]
    if changed:
        raise RecordError(f"reproduce: {', '.join(f'asset {f}' for f in changed)} "
                          f"{'differs' if len(changed) == 1 else 'differ'} from {original.dir} "
                          f"({'; '.join(f'{f} changed' for f in changed)}); nothing was submitted or copied")


def diff(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gtrun diff", description="Show which config keys and which "
                                     "artifact hashes differ between two recorded runs. Exit 0: the same, 1: "
                                     "they differ, 2: trouble (as diff(1)).")
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    ns = parser.parse_args(args)
    try:
        a, b = Run.at(ns.run_a), Run.at(ns.run_b)
        keys = config_changes(resolved(a.config()), resolved(b.config()))
        # a run that stopped before it submitted has no lineage: the artifacts it wrote are hashed now
        lineages = [run.lineage_here() if (run.dir / "lineage.json").is_file() else _left_artifacts(run) for run in (a, b)]
    except GtrunError as exc:
        return fail(str(exc))
    for later, earlier in ((b, a), (a, b)):
        continued = later.continues()
        if continued is not None and continued.resolve() == earlier.dir.resolve():
            out.print(f"{later.dir} continues {earlier.dir} (gtrun continue): its manifest holds the objects "
                      "that run's job left unlabeled, and its config may change keys such as the workers per object")
    for run, lineage in zip((a, b), lineages, strict=True):
        if "job_name" not in lineage:
            out.print(f"{run.dir} did not finish (no lineage.json): the artifacts it wrote are compared, "
                      + ("the data files are" if "request_normalized_sha256" in lineage else
                         "the data files and request are") + " not recorded")
    table = Table(title="config keys that differ")
    for col in ("key", str(a.dir.name), str(b.dir.name)):
        table.add_column(col, overflow="fold")
    for key, va, vb in keys:
        table.add_row(key, repr(va), repr(vb))
    out.print(table if keys else "config: identical")
    read = sorted({key for run in (a, b) for key, _ in environment_keys(run.config())})
    if read:  # recorded as an interpolation: each run's value then is not recorded
        out.print(f"{', '.join(read)}: read from the environment, compared as it resolves now")
    arts = Table(title="artifacts")
    for col in ("artifact", str(a.dir.name), str(b.dir.name), ""):
        arts.add_column(col)
    changes = artifact_changes(*lineages)
    for name, ha, hb in changes:
        arts.add_row(name, (ha or "-")[:12], (hb or "-")[:12],
                     "not recorded" if ha is None and hb is None else "same" if ha == hb else "DIFFERS")
    out.print(arts)
    return 1 if keys or any(ha != hb for _, ha, hb in changes) else 0  # as diff(1): 1 when they differ


def _left_artifacts(run: Run) -> dict[str, Any]:
    """What a run that did not finish left of its lineage: the hashes of the artifacts it wrote, and
    of its request when it built one (a reproduce refused after it compared the request, say)."""
    from runner.io.store import sha256_file
    from runner.pipeline import request_sha256

    left: dict[str, Any] = {"artifacts": {name: sha256_file(run.dir / name) for name in COMPARED
                                          if (run.dir / name).is_file()}}
    if (run.dir / "request.json").is_file():
        request = run.read_json("request.json")
        name = request.get("LabelingJobName")
        if isinstance(name, str) and name:
            left["request_normalized_sha256"] = request_sha256(request, name)
    return left


# -- serve / status / preview ---------------------------------------------------------------------

def _number(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number of `kind` in [low, high] (argparse names the option when it is not)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not in [{low:g}, {high:g}]")
        return value
    return parse


def serve(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gtrun serve", description="Run the local labeling service: "
                                     "SageMaker's labeling-job API (for boto3 and `gtrun run`) and the worker "
                                     "UI, over the storage folder of the local backend.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=_number(int, 0, 65535), default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    parser.add_argument("--root", default="outputs/storage", help="the storage folder (backend.root); "
                        "also where the service keeps its jobs and answers")
    parser.add_argument("--s3-endpoint", help="read inputs and write output in this S3 (or S3-compatible "
                        "store) instead of the storage folder: for the aws backend pointed at this service")
    parser.add_argument("--region", default="us-east-1", help="region for --s3-endpoint")
    ns = parser.parse_args(args)
    storage = None
    if ns.s3_endpoint:
        from runner.io.aws import client
        from runner.io.s3 import S3Store
        from runner.schema import EndpointsConfig

        storage = S3Store(client(BackendConfig(region=ns.region, endpoints=EndpointsConfig(s3=ns.s3_endpoint)), "s3"))
    from runner.service.server import Service  # uvicorn and starlette: only to serve

    made = storage is None and not Path(ns.root).exists()
    try:
        service = Service(ns.root, ns.host, ns.port, storage)
    except OSError as exc:
        return fail(_cannot_listen(ns.host, ns.port, ns.root, exc))
    try:  # before it says anything: a second service for the root is refused, the first one named
        service.register()
    except GtrunError as exc:
        service.sock.close()
        return fail(str(exc))
    if ns.host not in ("127.0.0.1", "localhost", "::1"):
        console.print(Text.assemble(("warning:", "yellow"), f" listening on {ns.host}: anyone who can reach it "
                                    "can label and read the task data"))
    where = ns.s3_endpoint or Path(ns.root).resolve()
    out.print(Text.assemble("gtrun labeling service at ", (f"{service.url}/", "bold"),
                            f" (storage: {where}{', a new folder' if made else ''})"))
    jobs = service.app.state.jobs.describe_all()
    for d in jobs:
        if d["LabelingJobStatus"] in ("Initializing", "InProgress"):
            out.print(f"  {d['LabelingJobName']}: {service.url}/jobs/{d['LabelingJobName']}/")
    if not jobs and not ns.s3_endpoint:
        out.print(f"  no jobs in {where} yet: a run keeps its jobs in its backend.root (outputs/storage under the "
                  "folder it was started in); serve that one with --root")
    out.print("Ctrl+C stops it; jobs and answers are kept.")
    try:
        service.run()
    except GtrunError as exc:  # another service took the folder while this one started (service.register)
        return fail(str(exc))
    return 0


def _cannot_listen(host: str, port: int, root: str, exc: OSError) -> str:
    """Why `gtrun serve` cannot listen on host:port, with what is there when the port is taken:
    this storage's service (then it is named, as when it is on another port), another storage's,
    or another program."""
    from runner.service.registry import running_url, served_already, served_root, url_of

    problem = f"--port: cannot listen on {host}:{port}: {exc.strerror or exc}"
    if exc.errno != errno.EADDRINUSE:
        return problem
    url = running_url(root) or url_of(host, port)
    there = served_root(url, timeout=1)
    if there == Path(root).resolve():
        return str(served_already(root, url))
    who = (f"the gtrun labeling service of another storage folder, {there}, is there" if there is not None
           else "another program, or a gtrun labeling service on another address, has it")
    return f"{problem} ({who})\n  hint: serve on another port: --port N, or --port 0 for any free one"


def _labeling(settings: Any, recorded: bool = False) -> Any:
    """The backend's labeling service, as a context manager; `recorded`: for a recorded run's job,
    whose storage must be there."""
    from runner.io.backends import backend_for

    return backend_for(settings).labeling(recorded=recorded)


def _submitted(run_path: str) -> tuple[str, Any]:
    """(job name, settings) of a recorded, submitted run."""
    run = Run.at(run_path)
    return run.job_name(), run.settings()


def compose_settings(overrides: list[str]) -> Any:
    """The config composed from overrides, without a run directory (for verbs that only ask)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="gtrun"):
        try:
            cfg = compose("config", overrides)
        except HydraException as exc:  # a misspelled key or option: said as run says it
            raise GtrunError(hydra_problem(exc, overrides)) from None
        return to_settings(cfg)


def status(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gtrun status", description="Show a run's labeling job: status and "
                                     "label counters (DescribeLabelingJob).")
    parser.add_argument("run", help="a recorded run directory, or a sweep's (each member's job)")
    parser.add_argument("--wait", action="store_true", help="poll until the job ends, with a progress bar")
    parser.add_argument("--interval", type=_number(float, 0.1, 3600), default=2.0,
                        help="seconds between polls while the counters "
                        "move (default 2); it backs off to a minute while nothing changes")
    ns = parser.parse_args(args)
    return _each_run(ns.run, lambda run: _status_of(run, ns.wait, ns.interval))


def _each_run(target: str, verb: Callable[[str], int]) -> int:
    """`verb` on a run directory, or on each member of a sweep directory (then the members left out
    are named); the highest exit code."""
    path = Path(target)
    if (path / CONFIG).is_file() or not path.is_dir():
        return verb(target)
    from runner.collect import collect as c

    try:
        members = c.sweep_members(path)
    except GtrunError as exc:
        return fail(str(exc))
    codes = [verb(str(member)) for member in members]
    for item in c.left_out_members(path):
        out.print(f"left out: {item}")
    return max(codes)


def _status_of(run: str, wait: bool, interval: float) -> int:
    """Print one run's job status and counters (after waiting for its end, when `wait`)."""
    try:
        name, settings = _submitted(run)
        with _labeling(settings, recorded=True) as service:
            job = service.describe_labeling_job(name)
            if wait and job["LabelingJobStatus"] not in TERMINAL:
                if settings.backend.kind.value == "local" and getattr(service, "endpoint", None) is None:
                    command, note = serve_advice(settings.backend.root)
                    out.print(Text.assemble("no labeling service is running for this storage; start one with ",
                                            (command, "bold"), " so workers can label"))
                    if note:
                        out.print(note)
                job = wait_for(service, name, interval)
    except GtrunError as exc:
        return fail(str(exc))
    c = job["LabelCounters"]
    total = c.get("TotalLabeled", 0) + c.get("Unlabeled", 0) + c.get("FailedNonRetryableError", 0)
    out.print(Text.assemble(f"{name}: ", (job["LabelingJobStatus"], "bold"), f" - labeled {c.get('TotalLabeled', 0)} "
                            f"of {total}, failed {c.get('FailedNonRetryableError', 0)}, "
                            f"unlabeled {c.get('Unlabeled', 0)}"))
    if job.get("LabelingJobOutput"):
        uri = job["LabelingJobOutput"]["OutputDatasetS3Uri"]
        # the local backend's "S3" is a folder: where the file is, for --manifest and the like
        local = f" ({LocalStore(settings.backend.root).path(uri)})" if settings.backend.kind is BackendKind.local else ""
        out.print(f"output: {uri}{local}")
    if job.get("FailureReason"):
        out.print(f"failure: {job['FailureReason']}")
    return 0


def stop(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gtrun stop", description="Stop a run's labeling job "
                                     "(StopLabelingJob). What was labeled so far is written to its output; "
                                     "a stopped job cannot be restarted: `gtrun continue RUN` labels what it left in a new job.")
    parser.add_argument("run", help="a recorded run directory, or a sweep's (each member's job)")
    ns = parser.parse_args(args)
    return _each_run(ns.run, _stop_one)


def _stop_one(run: str) -> int:
    try:
        name, settings = _submitted(run)
        with _labeling(settings, recorded=True) as service:
            job = service.describe_labeling_job(name)
            if job["LabelingJobStatus"] in TERMINAL:  # StopLabelingJob would refuse it
                out.print(f"{name}: already {job['LabelingJobStatus']}, nothing to stop")
                return 0
            service.stop_labeling_job(name)
            job = service.describe_labeling_job(name)
    except GtrunError as exc:
        return fail(str(exc))
    out.print(f"{name}: {job['LabelingJobStatus']}")
    return 0


def _runs_by_job() -> dict[str, Path]:
    """Job name -> run directory, for the runs recorded under outputs/."""
    found = {}
    for job in Path("outputs").glob("**/job.json"):  # a run whose job was created
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            found[json.loads(job.read_text())["LabelingJobName"].lower()] = job.parent
    return found


def _where(backend: BackendConfig) -> str:
    """The backend a listing asked, and on aws its region (backend.region); said too when boto3's own
    settings name another region, which gtrun does not use: a list of another region's is empty."""
    if backend.kind is not BackendKind.aws:
        return str(backend.kind.value)
    from runner.io.aws import chain_region

    theirs = chain_region(backend)
    if theirs and theirs != backend.region:
        out.print(Text.assemble(("note:", "yellow"), f" listed in {backend.region} (backend.region); your AWS "
                                f"settings name {theirs}: backend.region={theirs} lists that region's"))
    return f"aws, {backend.region}"


def _count_option(args: list[str], option: str, default: int) -> tuple[int, list[str]]:
    """`option N` or `option=N` (a positive integer, else `default`) and the other arguments."""
    value, rest = str(default), []
    it = iter(args)
    for a in it:
        if a == option:
            value = next(it, "")
        elif a.startswith(option + "="):
            value = a.split("=", 1)[1]
        else:
            rest.append(a)
    if not value.isdigit() or int(value) < 1:
        raise GtrunError(f"{option}: {value!r} is not a positive whole number")
    return int(value), rest


def jobs(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        out.print("usage: gtrun jobs [--max N] [key=value ...]\nList the backend's recent labeling jobs "
                  "(ListLabelingJobs, newest first), with the run directory of each one gtrun recorded here.")
        return 0
    from runner.io.labeling import store_path

    try:
        limit, overrides = _count_option(args, "--max", 20)
        settings = compose_settings(overrides)
        root = Path(settings.backend.root)
        if settings.backend.kind is BackendKind.local and not store_path(root).is_file():
            out.print(f"no labeling jobs in {root.resolve()}: gtrun run keeps its jobs there (backend.root)")
            return 0  # nothing made where no run has been
        with _labeling(settings) as service:
            summaries = service.list_labeling_jobs(limit)
    except GtrunError as exc:
        return fail(str(exc))
    runs = _runs_by_job()
    table = Table(title=f"labeling jobs ({_where(settings.backend)})")
    for col in ("job", "status", "labeled", "created", "run"):
        table.add_column(col, overflow="fold")
    for j in summaries:
        c = j["LabelCounters"]
        total = c.get("TotalLabeled", 0) + c.get("Unlabeled", 0) + c.get("FailedNonRetryableError", 0)
        run = runs.get(j["LabelingJobName"].lower())
        table.add_row(j["LabelingJobName"], j["LabelingJobStatus"], f"{c.get('TotalLabeled', 0)}/{total}",
                      f"{j['CreationTime']:%Y-%m-%d %H:%M}", str(run) if run else "")
    out.print(table)
    return 0


def workteams(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        out.print("usage: gtrun workteams [key=value ...]\nList the account's workteams (ListWorkteams), to "
                  "fill workteam.arn without the console.")
        return 0
    try:
        settings = compose_settings(args)
        if settings.backend.kind is BackendKind.local:
            from runner.service.api import local_workteams

            teams = local_workteams(settings.backend.region)  # the service's answer, with no service (nor storage) made
        else:
            with _labeling(settings) as service:
                teams = service.list_workteams()
    except GtrunError as exc:
        return fail(str(exc))
    table = Table(title=f"workteams ({_where(settings.backend)})")
    for col in ("name", "arn", "labeling portal", "description"):
        table.add_column(col, overflow="fold")
    for t in teams:
        table.add_row(t["WorkteamName"], t["WorkteamArn"], t.get("SubDomain", ""), t.get("Description", ""))
    out.print(table)
    return 0


def _label_list(text: str | None) -> list[str]:
    """--labels a,b,c: the names in order; an empty or repeated name is an error (the order is the class index)."""
    if not text:
        return []
    names = [x.strip() for x in text.split(",")]
    if "" in names:
        raise ConfigError("--labels", f"{text!r} has an empty name", "comma-separated names: Positive,Negative")
    twice = next((x for x in names if names.count(x) > 1), None)
    if twice is not None:
        raise ConfigError("--labels", f"{twice!r} is listed twice")
    return names


def transforms_settings(base: Any, overrides: list[str]) -> Any:
    """The transforms group with collect's overrides: `transforms=a,b` picks options, `transforms.k=v` sets keys."""
    from runner.schema import TransformsConfig

    cfg = OmegaConf.structured(TransformsConfig)
    cfg = OmegaConf.merge(cfg, OmegaConf.structured(base)) if base is not None else cfg
    dotlist = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "transforms":
            names = [n.strip() for n in value.strip("[]").split(",") if n.strip()]
            steps: dict[str, Any] = {}
            for name in names:
                path = CONF_DIR / "transforms" / f"{name}.yaml"
                if not path.is_file():
                    raise ConfigError("transforms", f"no transform {name!r}", "bundled: " + ", ".join(
                        sorted(p.stem for p in (CONF_DIR / "transforms").glob("*.yaml"))))
                bundled = OmegaConf.to_container(OmegaConf.load(path))
                assert isinstance(bundled, dict)  # a bundled transform file is a mapping (its `steps`)
                steps.update(bundled.get("steps") or {})
            cfg.steps = steps
        elif key.startswith("transforms."):
            dotlist.append(o.removeprefix("transforms."))
        else:
            raise ConfigError(key, "collect takes only transforms=... and transforms.<key>=... overrides")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
        return OmegaConf.to_object(cfg)
    except Exception as exc:  # noqa: BLE001 - OmegaConf's validation errors, named by key
        key = f"transforms.{getattr(exc, 'full_key', '') or ''}".rstrip(".")
        step = key.split(".")[1] if key.count(".") >= 1 else ""
        hint = (f"a transform's options are set as transforms.steps.{step}.<option>, e.g. "
                "transforms.steps.table.format=csv" if step in {p.stem for p in (CONF_DIR / "transforms").glob("*.yaml")}
                else "")
        if not hint and type(exc).__name__ in ("ConfigKeyError", "ConfigAttributeError"):
            close = meant(key)
            hint = f"did you mean {close}?" if close else ""
        raise ConfigError(key, str(exc).splitlines()[0], hint) from None


def collecting(what: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """collect.collect(*args, **kwargs) under a spinner saying what it is doing (drawn on a terminal only)."""
    from runner.collect import collect as c

    with console.status(f"collecting {what} ...") as shown:
        return c.collect(*args, show=lambda text: shown.update(f"collecting {what}: {text}"), **kwargs)


def collect_cmd(args: list[str]) -> int:
    from runner.collect import collect as c
    from runner.collect.report import UNJUDGED, filtered_out_everything, skipped_lines, split_leaks_said
    from runner.collect.transforms import HF_FOLDER, IMAGE_STEPS, label_map_typos
    from runner.schema import TaskType

    parser = argparse.ArgumentParser(
        prog="gtrun collect", description="Fetch a finished job's output, apply the run's transforms and "
        "write dataset/ in the run directory, with report.html, report.json and a README card. A sweep "
        "directory merges every member into one dataset; --manifest collects output of jobs gtrun did "
        "not launch.", usage="gtrun collect (TARGET [TARGET ...] | --manifest URI --out DIR) [options] [overrides]",
        epilog="overrides: transforms=a,b picks the transforms (bundled: " + ", ".join(
            sorted(p.stem for p in (CONF_DIR / "transforms").glob("*.yaml"))) + "; default: the run's, or "
        "table,jsonl with --manifest); transforms.<key>=value sets an option, e.g. transforms.on_error=skip, "
        "transforms.min_confidence=0.8, transforms.split.train=0.9, transforms.split.key=tweet_id, "
        "transforms.label_map.old=new")
    parser.add_argument("target", nargs="*", help="a run directory or a sweep directory; several (a run and "
                        "the run that continues it, say) are merged into one dataset in --out")
    parser.add_argument("--manifest", action="append", help="an output manifest (path or s3:// URI) of any "
                        "Ground Truth job")
    parser.add_argument("--task-type", choices=[t.value for t in TaskType],
                        help="with --manifest (default: the `type` in the label metadata)")
    parser.add_argument("--label-attribute",
                        help="with --manifest (default: the one the lines carry, `<attr>-metadata`)")
    parser.add_argument("--labels", help="comma-separated label names, in the label config's order (class index "
                        "0 first); they must agree with the class names the lines carry")
    parser.add_argument("--out", help="where to write the dataset (with --manifest, or several targets; "
                        "default: <target>/dataset)")
    ns, overrides = parser.parse_known_args(args)
    targets = [Path(t) for t in ns.target if "=" not in t]
    given = [flag for flag, value in (("--task-type", ns.task_type), ("--label-attribute", ns.label_attribute),
                                      ("--labels", ns.labels)) if value is not None]
    if given and not ns.manifest:
        return fail(f"{given[0]}: only with --manifest; a run's task type, label attribute and labels are "
                    "recorded with it (transforms.label_map=... renames labels)")
    overrides = [t for t in ns.target if "=" in t] + overrides  # key=value: an override, not a directory
    hint = ""
    if ns.manifest and (len(ns.manifest) > 1 or targets):
        return fail("--manifest: collect reads one output manifest at a time, and no run or sweep beside it "
                    "(runs and sweeps are merged with: gtrun collect RUN [RUN ...] --out DIR)")
    ns.manifest = ns.manifest[0] if ns.manifest else None
    warnings: list[str] = []  # a sweep cut short
    try:
        if ns.manifest:
            if not ns.out:
                return fail("--manifest needs --out (where to write the dataset)")
            if ns.manifest.startswith("s3://") and not ns.manifest[5:].partition("/")[2]:
                return fail(f"--manifest {ns.manifest}: not an object's URI (s3://bucket/key)")
            c.check_out_dir(Path(ns.out).resolve())  # before reading anything
            picked = any(o.partition("=")[0] == "transforms" for o in overrides)  # else table and jsonl
            settings = transforms_settings(None, overrides if picked else ["transforms=table,jsonl", *overrides])
            ext = c.identified(c.Output(name=Path(ns.out).name, manifest_uri=ns.manifest, storage=None,
                                        task_type=TaskType(ns.task_type) if ns.task_type else None,
                                        attribute=ns.label_attribute,
                                        labels=_label_list(ns.labels), job_dir=c.job_dir_of(ns.manifest)),
                                 settings.on_error)
            read = [f"label attribute {ext.attribute}" if not ns.label_attribute else "",
                    f"task type {ext.task_type.value}" if not ns.task_type and ext.task_type is not None else ""]
            if any(read):  # what identified() read off the lines
                out.print(f"read from the manifest: {', '.join(x for x in read if x)}", highlight=False)
            ext.provenance = {"output_manifest": ns.manifest, "label_attribute": ext.attribute}
            result = collecting(Path(ns.manifest).name, [ext], Path(ns.out), settings, dataset=ext.name,
                                provenance=ext.provenance)
            where = Path(ns.out)
        elif targets:
            if len(targets) > 1 and not ns.out:
                return fail("several runs or sweeps are merged into one dataset: say where with --out DIR")
            members, swept = [], []
            for target in targets:
                if (target / CONFIG).is_file() or target.is_file():  # a run (a file: Run.at names its run)
                    Run.at(target).job_name()
                    members.append(target)
                else:
                    members += c.sweep_members(target)
                    cut = c.cut_short(target)  # (multirun.yaml read once)
                    swept.append((target, cut))
                    if cut is not None and cut[1]:
                        n = len(cut[1])
                        warnings.append(f"the sweep {target} was {cut[0]}: {n} of its members {'was' if n == 1 else 'were'} "
                                        "not launched, and the dataset has none of their objects (left out, below)")
            resolved_members = [m.resolve() for m in members]
            twice = next((m for m, r in zip(members, resolved_members, strict=True)
                          if resolved_members.count(r) > 1), None)
            if twice is not None:
                return fail(f"{twice} is given twice (a run, or a member of a sweep given)")
            where = Path(ns.out) if ns.out else targets[0] / "dataset"
            if ns.out:
                c.check_out_dir(where.resolve())  # before reading anything
            outputs, running = [], []
            for m in members:
                try:
                    outputs.append(c.from_run(m))
                except c.NotEnded as exc:
                    if len(members) == 1:
                        raise c.CollectError(f"{exc}\n  hint: wait for it (gtrun status {shlex.quote(str(m))} --wait) "
                                             f"or stop it (gtrun stop {shlex.quote(str(m))}), then collect") from None
                    running.append((m, exc))
            if running:  # every one named, with what to do
                (member, why), more = running[0], [str(x) for x, _ in running[1:]]
                also = f" (also running: {', '.join(more[:3])}{', ...' if len(more) > 3 else ''})" if more else ""
                raise c.CollectError(f"{member}: {why}{also}\n  hint: wait for it (gtrun status "
                                     f"{shlex.quote(str(member))} --wait) or stop it (gtrun stop {shlex.quote(str(member))}); "
                                     f"the {len(outputs)} that ended can be collected one by one")
            c.continuations(outputs)  # a run and its continuation: each object counted once
            # named as the members are: after their sweep's folder when the runs are of several folders
            left_out = [item for target, cut in swept for item in c.left_out_members(
                target, cut or ("", []), qualified=c.several_folders(outputs))]
            base = Run.at(members[0]).settings().transforms
            settings = transforms_settings(base, overrides)
            # named after its folder (--out), its run's job, or its sweep: never another dataset's name
            alone = len(targets) == 1 and (targets[0] / CONFIG).is_file()
            dataset = where.name if ns.out else (outputs[0].name if alone else targets[0].name)
            result = collecting(dataset, outputs, where, settings, dataset=dataset,
                                provenance=c.merged_provenance(outputs, left_out=left_out))
            label_sets = {tuple(o.labels): o.name for o in outputs}
            # after a label_map the sets are compared as mapped: an older set mapped into a newer one is
            # what label_map is for; sets that still each have labels the others lack are said
            lm = settings.label_map
            mapped = {labels: tuple(dict.fromkeys(lm.get(x, x) for x in labels)) for labels in label_sets}
            if len(label_sets) > 1 and not (lm and frozenset().union(*mapped.values()) in map(frozenset, mapped.values())):
                hint = (f"  warning: the runs label with different labels{' after transforms.label_map' if lm else ''}: "
                        + "; ".join(f"{job}: {', '.join(mapped[labels]) or '(none given)'}"
                                    for labels, job in label_sets.items())
                        + " (transforms.label_map=... maps one set onto another)")
            continued = outputs[0].provenance.get("continues") if len(outputs) == 1 else None
            if continued:
                hint = (f"  this run continues {continued}; to have both in one dataset: "
                        f"gtrun collect {continued} {members[0]} --out DIR")
        else:
            return fail("collect needs a run or sweep directory, or --manifest")
    except GtrunError as exc:
        return fail(str(exc))
    counts = result["report"]["counts"]
    objects = f"{counts['objects']:,} object{'' if counts['objects'] == 1 else 's'}"
    out.print(Text.assemble(("collected", "bold green"), f" {objects} ({counts['labeled']:,} labeled, "
                            f"{counts['failed']:,} failed, {counts['unlabeled']:,} unlabeled) into {where}"))
    for name, files in result["written"].items():
        if isinstance(files, str):
            out.print(f"  {name}: table {files}")
            continue
        split = ", ".join(f"{k} {v:,}" for k, v in files.counts.items())
        folder = f" (in {HF_FOLDER}/)" if name == "hf_datasets" else ""
        images = ""
        if name in IMAGE_STEPS:
            where_images = "yolo/images/<split>/" if name == "yolo" else "coco/images/"
            images = (f" (annotations only: transforms.steps.{name}.images=false)" if files.images is None else
                      f"; {files.images:,} image{'' if files.images == 1 else 's'} copied to {where_images}")
        out.print(f"  {name}{folder}: {split}{images}")
        if files.problem_count:
            out.print(f"  warning: {name}: {files.problem_count:,} problem{'s' if files.problem_count != 1 else ''} "
                      f"(the first: {files.problems[0]}); report.json lists the first {len(files.problems)}")
        if name == "table" and result.get("view"):  # its name may hold a "-": quoted, as SQL needs it
            query = "FROM " + json.dumps(result["view"])
            code = f"import duckdb; duckdb.connect({str(where / 'gtrun.duckdb')!r}).sql({query!r}).show()"
            out.print(f"  query it: python -c {shlex.quote(code)}")
    for f in result["report"].get("transforms", {}).get("filters", []):
        if f.get("dropped") or f.get("unknown"):  # unknown: no confidence (a custom task's boxes), no answers
            out.print(f"  transforms.{f['option']}={f['threshold']} dropped {f['dropped']:,} of the "
                      f"{f['objects']:,} labeled objects it looked at"
                      + (f"; kept {f['unknown']:,} {UNJUDGED[f['option']]}" if f.get("unknown") else ""))
    empty = filtered_out_everything(result["report"])
    if empty:
        out.print(f"  warning: {empty}")
    leaks = split_leaks_said(result["report"])
    if leaks:
        field = result["report"]["transforms"]["split_leaks"]["field"]
        out.print(f"  warning: {leaks}: transforms.split.key={field} keeps each in one split (see report.html)")
    uneven = _uneven_split(settings.split, result["written"])
    if uneven:
        out.print(f"  warning: {uneven}")
    skipped, first = skipped_lines(result["report"])
    if skipped:
        line, problem = first[0]
        out.print(f"  warning: transforms.on_error=skip read past {skipped:,} malformed line{'' if skipped == 1 else 's'} "
                  f"(the first: line {line:,}: {problem}); report.html lists them")
    for warning in [*label_map_typos(result["report"].get("labels") or [], settings.label_map), *warnings]:
        out.print(f"  warning: {warning}")
    for item in result.get("left_out", []):
        out.print(f"  left out: {item}")
    for cont in result.get("continued", []):  # its continuation's job labeled what this one left
        both = " ".join(shlex.quote(str(t)) for t in [*targets, cont["continuation"]])
        out.print(f"  warning: {cont['member']} was continued by {cont['continuation']} (gtrun continue), whose job was "
                  f"given the objects {cont['member']}'s job did not label: this dataset lists them as not labeled; "
                  f"to have their labels, collect both: gtrun collect {both} --out DIR")
    overlap = result["report"].get("sweep", {}).get("overlap") or {}
    if overlap.get("objects"):
        if settings.split.key is None:
            out.print(f"  warning: {_objects(overlap['objects'])} in more than one member; transforms.split.key="
                      "<an input field that names the object> keeps each in one split (see report.html)")
        else:  # the copies share a split already: the dataset still has each more than once
            out.print(f"  note: {_objects(overlap['objects'])} in more than one member: the dataset has them "
                      f"more than once, each in one split by transforms.split.key={settings.split.key} (see report.html)")
    out.print(f"  report: {where / 'report.html'}")
    if hint:
        out.print(hint)
    return 0


def _objects(n: int) -> str:
    """"1 object appears", "2 objects appear"."""
    return f"{n:,} object appears" if n == 1 else f"{n:,} objects appear"


def _uneven_split(split: Any, written: dict[str, Any]) -> str | None:
    """What to say when a split left a split of a ratio above 0 with no objects (a small dataset:
    a share of a few objects can get none), or, by transforms.split.key, far short of its ratio
    (under half its share of 10 objects or more): every object with the same value goes to one
    split, so a key with few values splits unevenly."""
    counts = next((f.counts for f in written.values() if not isinstance(f, str) and "train" in f.counts), None)
    if counts is None:
        return None
    total = sum(counts.values())
    ratios = {"train": split.train, "validation": split.validation, "test": split.test}
    keyed = split.key is not None
    short = [name for name, r in ratios.items() if keyed and total * r >= 10 and counts.get(name, 0) < total * r / 2]
    empty = [name for name, r in ratios.items() if r > 0 and total and not counts.get(name, 0)]
    if not short and not empty:
        return None
    got = ", ".join(f"{name} {counts.get(name, 0):,}" for name in ratios)
    none = (f"; {' and '.join(empty)} {'has' if len(empty) == 1 else 'have'} no objects"
            + (" (a share of a few objects can get none: collect more, or set its ratio to 0)"
               if any(total * ratios[name] < 10 for name in empty) else "")) if empty else ""
    how = f"transforms.split.key={split.key}" if keyed else "the split by object id"
    said = (f"{how} split {total:,} object{'' if total == 1 else 's'} as {got} for ratios "
            f"{split.train:g}/{split.validation:g}/{split.test:g}{none}")
    if not keyed:
        return said
    return (f"{said}: every object with the same {split.key} goes to one split, so a key with few values splits "
            "unevenly (a key that names each object splits by the ratios)")


def wait_for(service: Any, name: str, interval: float) -> dict[str, Any]:
    """Poll DescribeLabelingJob until the job ends, showing its label counters."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # On a terminal, a bar; in a pipe or a log, a plain line each time the counters or the status move.
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task(name, total=None)
        delay, last, said = interval, None, None
        while True:
            job: dict[str, Any] = service.describe_labeling_job(name)
            c = job["LabelCounters"]
            done = c.get("TotalLabeled", 0) + c.get("FailedNonRetryableError", 0)
            total = done + c.get("Unlabeled", 0)
            bar.update(task, completed=done, total=total, description=f"{name} {job['LabelingJobStatus']}")
            line = f"{datetime.now():%H:%M:%S} {name} {job['LabelingJobStatus']}: {done:,} of {total:,} done"
            if not console.is_terminal and line.split(" ", 1)[1] != said:
                console.print(line)
                said = line.split(" ", 1)[1]
            if job["LabelingJobStatus"] in TERMINAL:
                return job
            # Back off while nothing changes (up to a minute between polls); poll soon after progress.
            delay = interval if c != last else min(delay * 1.5, 60.0)
            last = c
            time.sleep(delay)


def preview_rows(pipe: Pipeline, settings: Any, rows: int) -> list[Path]:
    """Render the template for the first rows through the labeling service; screenshot each page."""
    from runner.preview import screenshots

    lines, text = pipe.preview_inputs(rows)
    # to the microsecond, as run directories: two previews started in the same second keep their own
    folder = Path("outputs") / "previews" / f"{datetime.now():%Y-%m-%d_%H-%M-%S-%f}_{Path(settings.template.file).stem}"
    return screenshots(settings.backend.root, text, lines, folder, title=settings.template.title)


def preview(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        out.print("usage: gtrun preview [template=<name>] [source=<name>] [--rows N] [key=value ...]\n"
                  "Render the template with the first N rows of the source through the labeling service "
                  "and save a PNG screenshot per row (headless Chromium) under outputs/previews/.")
        return 0
    try:
        rows, rest = _count_option(args, "--rows", 3)
    except GtrunError as exc:
        return fail(str(exc))
    os.environ[ENV_ROWS] = str(rows)
    return _hydra("preview", rest)


# -- entry point ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import signal

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # (serve's server installs its own)
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        console.print("terminated" if terminated else "interrupted")
        return 143 if terminated else 130


def _main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    setup()
    if not args or args[0] in ("-h", "--help", "help"):
        out.print(USAGE)
        return 0 if args else 2
    if args[0] == "--version":
        out.print(f"gtrun {__version__}")
        return 0
    verb, rest = args[0], args[1:]
    if verb in ("run", "plan"):
        return _hydra(verb, rest)
    if verb == "reproduce":
        return reproduce(rest)
    if verb == "diff":
        return diff(rest)
    if verb == "serve":
        return serve(rest)
    if verb == "status":
        return status(rest)
    if verb == "preview":
        return preview(rest)
    verbs = {"stop": stop, "jobs": jobs, "workteams": workteams, "collect": collect_cmd,
             "continue": continue_cmd}
    if verb in verbs:
        return verbs[verb](rest)
    return fail(f"unknown verb {verb!r}\n\n{USAGE}")


if __name__ == "__main__":  # run as runner.cli, so sweep workers can import the task by name
    from runner import cli

    sys.exit(cli.main())
