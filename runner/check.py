"""Offline check of a finished CreateLabelingJob request against SageMaker's own service model.

botocore's validator checks required keys, types and `min` only (`VALIDATED_METADATA_ATTRS` in
botocore/validate.py); it lets through a job name with `_` or 12 workers per object. So this
module also walks the input shape and checks every `pattern`, `max` and `enum` it declares.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, ConfigErrors

if TYPE_CHECKING:  # botocore loads when a request is checked: not while a manifest streams
    from botocore.model import Shape, StructureShape

# Java's \p{..} classes used in the model (TagKey/TagValue: `([\p{L}\p{Z}\p{N}_.:/=+\-@]*)`),
# as text valid inside a Python character class. \w (Unicode mode) is str.isalnum() plus "_":
# letters and numbers; the "_" it adds is allowed by every pattern that uses these classes.
# \p{Z} is spelled out: Python's \s would also let tabs and newlines through.
_JAVA_CLASSES = {
    r"\p{L}": r"\w",
    r"\p{N}": r"\w",
    r"\p{Z}": r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000",
}

# botocore's report lines: "<What> for parameter <path>, ..." / "<What> in <path>: ...".
_BOTOCORE_LINE = re.compile(r"(?P<what>.+?) (?:for parameter|in) (?P<path>[^\s,:]+)(?P<rest>.*)")


@functools.cache
def input_shape(operation: str = "CreateLabelingJob") -> StructureShape:
    """An operation's input shape in the sagemaker model botocore ships.

    Only the shapes the operation reaches are kept: the whole model takes ~11 MB once loaded,
    memory a manifest streamed next would otherwise share with it.
    """
    from botocore.loaders import Loader
    from botocore.model import ServiceModel

    full = Loader().load_service_model("sagemaker", "service-2")
    spec = full["operations"][operation]
    names = [ref["shape"] for ref in (spec.get("input"), spec.get("output"), *spec.get("errors", ())) if ref]
    shapes: dict[str, Any] = {}
    while names:
        name = names.pop()
        if name not in shapes:
            shape = shapes[name] = full["shapes"][name]
            refs = [*shape.get("members", {}).values(), *(shape[k] for k in ("member", "key", "value") if k in shape)]
            names.extend(ref["shape"] for ref in refs)
    model = ServiceModel({"metadata": full["metadata"], "operations": {operation: spec}, "shapes": shapes},
                         "sagemaker")
    found = model.operation_model(operation).input_shape
    assert found is not None
    return found


@functools.cache
def _regex(pattern: str) -> re.Pattern[str] | None:
    """The model's (Java) pattern as a Python regex; None when it cannot be translated."""
    if r"\p{" in pattern:
        for java, python in _JAVA_CLASSES.items():
            pattern = pattern.replace(java, python)
        if r"\p{" in pattern:
            return None  # a Unicode class not listed above: left to the service
        flags = 0
    else:
        flags = re.ASCII  # Java's \d, \w and \s are ASCII unless asked otherwise
    try:
        return re.compile(pattern, flags)
    except re.error:
        return None  # a Java-only construct: left to the service


def _model_problems(value: Any, shape: Shape, path: str) -> Iterator[tuple[str, str]]:
    """(path, problem) for every max, pattern and enum rule `value` breaks; botocore does the rest."""
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure" and isinstance(value, Mapping):
        members = shape.members
        for name, member in members.items():
            if name in value:
                yield from _model_problems(value[name], member, f"{path}.{name}")
    elif kind == "list" and isinstance(value, (list, tuple)):
        if "max" in meta and len(value) > meta["max"]:
            yield path, f"has {len(value)} items, above the maximum {meta['max']}"
        for i, item in enumerate(value):
            yield from _model_problems(item, shape.member, f"{path}[{i}]")
    elif kind == "map" and isinstance(value, Mapping):
        if "max" in meta and len(value) > meta["max"]:
            yield path, f"has {len(value)} entries, above the maximum {meta['max']}"
        for key, item in value.items():
            yield from _model_problems(key, shape.key, f"{path}.<key {key!r}>")
            yield from _model_problems(item, shape.value, f"{path}.{key}")
    elif kind == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            yield path, f"is {len(value)} characters long, above the maximum {meta['max']}"
        if "pattern" in meta:
            regex = _regex(meta["pattern"])
            if regex is not None and not regex.fullmatch(value):
                yield path, f"{value!r} does not match the pattern {meta['pattern']}"
        enum = meta.get("enum")
        if enum and value not in enum:
            yield path, f"{value!r} is not one of {', '.join(enum)}"
    elif kind in ("integer", "long", "float", "double"):
        if isinstance(value, bool):
            # bool is an int to Python and to botocore's type check, never to SageMaker.
            yield path, f"{value!r} is a boolean, not a number"
        elif isinstance(value, (int, float)) and "max" in meta and value > meta["max"]:
            yield path, f"{value!r} is above the maximum {meta['max']}"


def _botocore_problems(request: Mapping[str, Any], shape: Shape) -> Iterator[tuple[str, str]]:
    """(path, problem) for each line of botocore's own validation report."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    try:
        validate_parameters(request, shape)
    except ParamValidationError as exc:
        for line in str(exc.kwargs.get("report", exc)).splitlines():
            match = _BOTOCORE_LINE.fullmatch(line)
            if match is None:
                yield "request", line
                continue
            where, what, rest = match["path"], match["what"], match["rest"]
            path = "request" if where == "input" else f"request.{where}"
            missing = re.fullmatch(r': "(\w+)"', rest)
            unknown = re.fullmatch(r': "(.*)", must be one of: (.*)', rest)
            if what == "Missing required parameter" and missing:
                yield f"{path}.{missing[1]}", "is required but missing"
            elif what == "Unknown parameter" and unknown:
                yield f"{path}.{unknown[1]}", f"is not a parameter here; use one of {unknown[2]}"
            else:
                yield path, what[:1].lower() + what[1:] + rest


def operation_problems(operation: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(path, problem) for everything SageMaker's model says is wrong with an operation's input."""
    shape = input_shape(operation)
    return [*_botocore_problems(params, shape), *_model_problems(params, shape, "request")]


def validate_request(request: dict[str, Any]) -> None:
    """Nothing when `request` fits SageMaker's CreateLabelingJob model; else ConfigErrors listing
    every problem, each named by its path (`request.HumanTaskConfig.TaskKeywords`)."""
    problems = operation_problems("CreateLabelingJob", request)
    # UiConfig: "exactly one of UiTemplateS3Uri or HumanTaskUiArn" is in the model's documentation
    # only, not in its metadata.
    human = request.get("HumanTaskConfig")
    ui = human.get("UiConfig") if isinstance(human, Mapping) else None
    if isinstance(ui, Mapping) and len({"UiTemplateS3Uri", "HumanTaskUiArn"} & ui.keys()) != 1:
        problems.append(("request.HumanTaskConfig.UiConfig",
                         "needs exactly one of UiTemplateS3Uri and HumanTaskUiArn"))
    if problems:
        # Stable order by path, so the same request always gives the same message.
        problems.sort(key=lambda p: p[0])
        raise ConfigErrors([ConfigError(path, problem) for path, problem in problems])
