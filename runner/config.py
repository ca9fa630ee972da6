"""Where the bundled config lives, its resolvers, and the step from a composed DictConfig to dataclasses."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner.errors import ConfigError
from runner.schema import GtrunConfig, register_schemas

HOME = Path(__file__).resolve().parent.parent  # the project root: conf/, templates/, data/
CONF_DIR = HOME / "conf"
TEMPLATES_DIR = HOME / "templates"


def slug(*parts: Any) -> str:
    """Join the set parts into a lower-case name of letters, digits and hyphens.

    >>> slug("tweets", "NBA2K")
    'tweets-nba2k'
    >>> slug("tweets", None)
    'tweets'
    """
    text = "-".join(str(p) for p in parts if p not in (None, "", "None", "null"))
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class NoWireLogs(logging.Filter):
    """Keeps the AWS libraries' DEBUG records out of a log: botocore's show each request's headers,
    which hold the access key id, the session token and the signature (`hydra.verbose=true` sets
    every logger to DEBUG). The job logging config puts it on the run's log file."""

    WIRE = ("botocore", "boto3", "s3transfer", "urllib3", "smart_open")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO or not record.name.startswith(self.WIRE)


def setup() -> None:
    """Register gtrun's schemas and resolvers; safe to call more than once."""
    register_schemas()
    OmegaConf.register_new_resolver("gtrun_home", lambda: str(HOME), replace=True)
    OmegaConf.register_new_resolver("slug", slug, replace=True)


def to_settings(cfg: DictConfig) -> GtrunConfig:
    """The composed config as dataclasses; a missing or wrong value, or a key gtrun does not have
    (`+workteam.worker_per_object=3` adds one past the schema), names its key."""
    try:
        # every key is one of the schema's: to_object alone would drop a key `+` added
        OmegaConf.merge(OmegaConf.structured(GtrunConfig), OmegaConf.to_container(cfg, resolve=False))
        settings = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        msg = str(exc).splitlines()[0]
        if type(exc).__name__ == "MissingMandatoryValue":
            raise ConfigError(key, "is required but not set",
                              f"set it on the command line: {key}=...") from None
        if type(exc).__name__ in ("ConfigKeyError", "ConfigAttributeError"):  # a key the schema does not have
            parent, _, name = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            raise ConfigError(key, no_such_key(key, [str(k) for k in node.keys() if k != name]
                                               if isinstance(node, DictConfig) else None)) from None
        raise ConfigError(key, msg) from None
    assert isinstance(settings, GtrunConfig)
    return settings


def no_such_key(key: str, siblings: list[str] | None = None) -> str:
    """What is wrong with a misspelled `key`, with the key most like it (`meant`)."""
    close = meant(key, siblings)
    return "no such key" + (f" (did you mean {close!r}?)" if close else "")


def meant(key: str, siblings: list[str] | None = None) -> str | None:
    """The dotted key most like a misspelled `key`, among its siblings (default: the schema's keys
    beside it), or None.

    >>> meant("workteam.workers_per_objekt"), meant("nothing.like.it")
    ('workteam.workers_per_object', None)
    """
    import difflib

    parent, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, schema_keys(parent) if siblings is None else siblings, n=1)
    return ".".join(filter(None, (parent, close[0]))) if close else None


def unremovable(key: str) -> str:
    """Why `~key` cannot remove a key of the schema, and what to set it to instead.

    >>> unremovable("source.where")
    "a key of gtrun's schema cannot be removed; set it to null instead: source.where=null"
    >>> unremovable("workteam.kind")
    "a key of gtrun's schema cannot be removed; it takes one of private, public, vendor: workteam.kind=..."
    >>> unremovable("template.labels").partition("; ")[2]
    'set it to a list instead ([] for none, where the config takes none): template.labels=[a,b]'
    >>> unremovable("hydra.run.dir")
    "a key of Hydra's config cannot be removed; set it instead: hydra.run.dir=..."
    """
    import dataclasses
    import enum
    import typing

    if key.partition(".")[0] not in {f.name for f in dataclasses.fields(GtrunConfig)}:  # hydra.*
        return f"a key of Hydra's config cannot be removed; set it instead: {key}=..."
    node = _schema_node(key)
    said = "a key of gtrun's schema cannot be removed; "
    args = typing.get_args(node)
    if typing.get_origin(node) is typing.Union and type(None) in args:  # Optional[...]
        return said + f"set it to null instead: {key}=null"
    if isinstance(node, type) and issubclass(node, enum.Enum):
        takes = f"one of {', '.join(str(m.value) for m in node)}"
    elif dataclasses.is_dataclass(node):
        return said + f"set its keys instead: {', '.join(f'{key}.{f.name}' for f in dataclasses.fields(node))}"
    elif typing.get_origin(node) in (dict, list):  # an empty one only where gtrun's checks take it
        kind, empty, shape = ("mapping", "{}", "{k: v}") if typing.get_origin(node) is dict else ("list", "[]", "[a,b]")
        return said + f"set it to a {kind} instead ({empty} for none, where the config takes none): {key}={shape}"
    else:
        takes = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(node, "a value")
    return said + f"it takes {takes}: {key}=..."


def schema_keys(path: str) -> list[str]:
    """The keys the schema has under the dotted `path` ("" is the root; none past a leaf or a dict).

    >>> schema_keys("workteam")[:3]
    ['kind', 'arn', 'workers_per_object']
    """
    import dataclasses

    node = _schema_node(path)
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def _schema_node(path: str) -> Any:
    """The schema's type at the dotted `path` ("": GtrunConfig; None past a leaf or a dict)."""
    import dataclasses
    import typing

    node: Any = GtrunConfig
    for part in filter(None, path.split(".")):
        hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
        node = hints.get(part)
    return node


def relative_to_cwd(path: str) -> str:
    """Where a relative path in the config was read, for an error saying it is not there: a run
    started in another folder than the project's reads its paths there."""
    return "" if Path(path).expanduser().is_absolute() else f" (a relative path, read in {Path.cwd()})"
