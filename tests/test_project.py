"""Project-wide checks: every bundled config composes into a valid request, builders stay pure,
the README documents every option."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from runner.build.request import check_settings, label_category_config, labeling_job_request
from runner.build.template import check_template, task_input
from runner.check import validate_request
from runner.config import CONF_DIR, HOME, setup, to_settings
from runner.schema import GtrunConfig, TaskType

ROOT = Path(__file__).resolve().parent.parent


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def composed(*overrides: str) -> GtrunConfig:
    setup()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return to_settings(compose("config", list(overrides)))


def request_for(s: GtrunConfig) -> dict:
    return labeling_job_request(
        s, job_name="test-20260101-000000-abcd", manifest_uri="s3://b/p/m.jsonl",
        template_uri="s3://b/p/t.liquid", label_config_uri="s3://b/p/l.json", output_uri="s3://b/p/out",
        role_arn="arn:aws:iam::123456789012:role/r",
        workteam_arn=s.workteam.arn or f"arn:aws:sagemaker:{s.backend.region}:123456789012:workteam/private-crowd/t",
        tags={"gtrun:run": "x"})


SAMPLE_LINE = {"source": "a tweet", "source-ref": "s3://b/i.png", "entity": "Xbox", "tweet_id": 1,
               "receipt_id": 1, "tokens": [{"text": "TOTAL", "box": [1, 2, 3, 4]}], "width": 10, "height": 10}


@pytest.mark.parametrize("group, option", [(g, o) for g in ("job", "source", "template", "workteam",
                                                            "pricing", "transforms", "backend")
                                           for o in options(g)])
def test_every_bundled_option_composes(group, option):
    # Mechanical Turk: its workteam and its per-task pricing go together
    extra = {("workteam", "public"): ["pricing=public"], ("pricing", "public"): ["workteam=public"]}.get((group, option), [])
    extra += ["backend.bucket=my-bucket", "backend.role_arn=arn:aws:iam::123456789012:role/r",
              "workteam.arn=arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/t"] \
        if (group, option) == ("backend", "aws") else []
    s = composed(f"{group}={option}", *extra)
    assert check_settings(s) == []
    validate_request(request_for(s))


@pytest.mark.parametrize("template", options("template"))
def test_every_bundled_template_renders_for_its_task_type(template):
    s = composed(f"template={template}")
    line = {k: v for k, v in SAMPLE_LINE.items()
            if k != ("source" if s.template.task_type is TaskType.bounding_box or template == "receipts_ner"
                     else "source-ref")}
    text = (ROOT / "templates" / s.template.file).read_text()
    html = check_template(text, s.template.file, task_input(s.template.task_type, line, s.template.labels))
    assert "<crowd-form>" in html
    if s.template.labels:
        assert label_category_config(s.template.labels, s.template.task_type, s.template.instructions)


def test_builders_import_no_io_library():
    code = ("import sys, runner.build.sql, runner.build.manifest, runner.build.request, runner.build.price, "
            "runner.build.template, runner.build.lambdas; "
            "print(','.join(m for m in ('boto3', 'botocore', 'duckdb', 'smart_open', 'hydra', 'pyarrow') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_runner_type_checks_under_mypy_strict(tmp_path):
    # plain `mypy` reads setup.cfg's [mypy] section: runner/, strict (a fresh cache: no stale results)
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_sources_pass_ruff():
    # ruff.toml's rules (E, F, I, UP, B, G) over everything the project writes in Python
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "runner", "tests", "bench"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def leaf_keys(cls: type, prefix: str) -> list[str]:
    """Every leaf key of a config dataclass, nested dataclasses included."""
    import typing

    from runner import schema

    keys = []
    hints = typing.get_type_hints(cls, vars(schema))
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        inner = [a for a in typing.get_args(kind) if dataclasses.is_dataclass(a)]
        nested = kind if dataclasses.is_dataclass(kind) else (inner[0] if inner else None)
        keys += leaf_keys(nested, f"{prefix}.{f.name}") if nested else [f"{prefix}.{f.name}"]
    return keys


def test_readme_documents_every_config_option():
    readme = (ROOT / "README.md").read_text()
    keys = [k.removeprefix(".") for k in leaf_keys(GtrunConfig, "")]
    assert "backend.athena.workgroup" in keys and "source.assets.files" in keys
    assert [k for k in keys if f"`{k}`" not in readme] == []


def test_readme_opens_with_the_two_setup_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```")[0].strip() for b in readme.split("```bash")[1:3]]
    assert blocks[0] == "pip install -e . && gtrun run"
    assert "pytest" in blocks[1]
    assert blocks[1].split("&& ")[-1] in (ROOT / ".ci" / "run").read_text()
    assert (HOME / "conf").is_dir()
