"""Worker templates: Ground Truth's Liquid dialect, what `task.input` holds, and offline checks.

Ground Truth renders the worker UI with Liquid: autoescape on, plus the filters `to_json`,
`skip_autoescape`, `escape_once`, `escape` and `grant_read_access` (reference §5.1). Everything
here is pure: the caller reads the template file and passes its text and a display name.

Undefined variables: printing or filtering one (`{{ task.input.missing }}`,
`{{ task.input.missing | upcase }}`, `{% for x in task.input.missing %}`) is an error, so gtrun can
say "the template uses a variable the manifest lacks" before a worker sees a blank. Where Liquid
code *tests* a value it is nil, as in Ground Truth: `| default: 'x'`, `{% if %}`, `{% unless %}`,
`{% case %}` and comparisons (`== nil` is true). python-liquid's `StrictUndefined` raises even
there (`{{ x | default: 'q' }}` fails), and `StrictDefaultUndefined` fixes `default` but still
raises in `if`/`unless`; `FalsyStrictUndefined` is the one that matches.

String literals are escaped too (`{{ "a & b" }}` prints `a &amp; b`, as in the Developer
Guide's filter example); python-liquid alone would trust them. Only `escape`, `escape_once` and
`skip_autoescape` mark output as already safe.

Hyphenated keys: python-liquid reads `task.input.source-ref` (dotted) and
`task.input["source-ref"]` (bracket) as the same path, as Ground Truth does.
"""

from __future__ import annotations

import difflib
import html
import json
import pathlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from html.parser import HTMLParser
from typing import Any

from liquid import BoundTemplate, Environment, FalsyStrictUndefined, RenderContext, is_undefined
from liquid.ast import ConditionalBlockNode, Node
from liquid.builtin.expressions import FilteredExpression, Path, StringLiteral
from liquid.builtin.tags.case_tag import CaseNode, MultiExpressionBlockNode
from liquid.builtin.tags.if_tag import IfNode
from liquid.builtin.tags.unless_tag import UnlessNode
from liquid.exceptions import FilterArgumentError, LiquidError
from liquid.expression import Expression
from liquid.span import Span
from liquid.stringify import to_liquid_string
from liquid.token import TOKEN_TAG
from markupsafe import Markup

from runner.errors import ConfigError, GtrunError, ManifestError, TemplateError
from runner.schema import TaskType

# The manifest field that carries the data object, in order of preference (reference §3.1).
OBJECT_FIELDS = ("source", "source-ref")

# The field each built-in task type's pre-annotation Lambda reads the data object from: image tasks
# an S3 URI in `source-ref`, text tasks the text in `source` (DG sms-data-input; reference §3.1).
# A custom task (no Lambda) reads whatever its template uses: task.input is the manifest line.
TASK_OBJECT_FIELD = {TaskType.text_classification: "source", TaskType.text_multilabel: "source",
                     TaskType.named_entity: "source", TaskType.bounding_box: "source-ref"}
_OBJECT_KIND = {"source": "text", "source-ref": "image"}

# Conditions on `x.size` / `x.first` / `x.last` also show that `x` exists.
_PROBES = frozenset({"size", "first", "last"})

# Ruby Liquid's escape_once: escape <>"' and any & that does not start an entity.
_ESCAPE_ONCE = re.compile(r"""[<>"']|&(?!(?:[a-zA-Z][a-zA-Z0-9]*|#[0-9]+|#[xX][0-9a-fA-F]+);)""")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"}

_MISSING = object()

# python-liquid's message when a block tag reaches the end of the template unclosed.
_UNCLOSED = re.compile(r"expected tag end(\w+), found end of expression")


class _NilUndefined(FalsyStrictUndefined):
    """Strict when printed, filtered or iterated; nil for default, if, unless, case and ==."""

    __slots__ = ()
    force_liquid_default = True  # `default` returns its argument without probing the value


def _require(value: object) -> object:
    """`value`, or the undefined variable's own UndefinedError (it names the variable and line)."""
    if is_undefined(value):
        str(value)  # a strict undefined raises here; a lenient one would print as ""
    return value


def _to_json(value: object) -> str:
    # A plain str, not Markup: autoescape escapes it once, and `| escape` (which returns Markup)
    # also escapes it once, so `categories="{{ labels | to_json | escape }}"` is correct HTML.
    return json.dumps(_require(value), ensure_ascii=False, separators=(",", ":"), default=str)


def _skip_autoescape(value: object) -> Markup:
    value = _require(value)
    return Markup(value if isinstance(value, str) else to_liquid_string(value, autoescape=False))


def _escape_once(value: object) -> Markup:
    text = to_liquid_string(_require(value), autoescape=False)
    return Markup(_ESCAPE_ONCE.sub(lambda m: _ENTITIES[m.group(0)[0]], text))


def _grant_read_access_filter(grant: Callable[[str], str] | None) -> Callable[[object], str]:
    def grant_read_access(value: object) -> str:
        uri = to_liquid_string(_require(value), autoescape=False)
        if grant is None or not uri.startswith("s3://"):
            return uri  # Ground Truth presigns s3:// URIs; anything else passes as written
        try:
            return grant(uri)
        except (GtrunError, ValueError) as exc:
            # FilterArgumentError picks up the filter's token, so the message gets file:line.
            raise FilterArgumentError(f"grant_read_access: {exc}", token=None) from exc

    return grant_read_access


class _PlainString(StringLiteral):
    """A string literal that autoescape escapes, as Ground Truth does."""

    __slots__ = ()

    def evaluate(self, context: RenderContext) -> str:
        return self.value


def _untrust_literals(template: BoundTemplate) -> None:
    static = RenderContext(template)

    def expression(expr: Expression) -> None:
        if type(expr) is StringLiteral:
            expr.__class__ = _PlainString  # same slots, so the node is retyped in place
        for child in expr.children():
            expression(child)

    def visit(node: Node) -> None:
        for expr in node.expressions():
            expression(expr)
        for child in node.children(static, include_partials=False):
            visit(child)

    for node in template.nodes:
        visit(node)


class _GtEnvironment(Environment):
    # python-liquid trusts string literals under autoescape (they evaluate to Markup), so
    # {{ "Tom & Jerry" }} would print a bare "&"; Ground Truth escapes them like any value
    # (the DG filter example: {{ "Have you read 'James & ...'" }} -> &#39;James &amp; ...).
    def from_string(self, source: str, name: str = "", path: str | pathlib.Path | None = None,
                    globals: Mapping[str, object] | None = None,  # noqa: A002
                    matter: Mapping[str, object] | None = None) -> BoundTemplate:
        template = super().from_string(source, name=name, path=path, globals=globals,
                                       matter=matter)
        _untrust_literals(template)
        return template


def gt_environment(grant_read_access: Callable[[str], str] | None = None) -> Environment:
    """A python-liquid Environment with Ground Truth's autoescape, undefined rules and filters."""
    env = _GtEnvironment(autoescape=True, undefined=_NilUndefined)
    env.filters["to_json"] = _to_json
    env.filters["skip_autoescape"] = _skip_autoescape
    env.filters["escape_once"] = _escape_once
    env.filters["grant_read_access"] = _grant_read_access_filter(grant_read_access)
    # `escape` is python-liquid's own: under autoescape it returns Markup, so it never doubles.
    # A template gtrun has not built (fill_job_values) reads `gtrun.<value> | default: ...` as nil,
    # as Ground Truth does: its default
    env.globals = {**env.globals, "gtrun": {}}
    return env


def _where(name: str, exc: LiquidError) -> str:
    context = exc.context()
    return f"{name}:{context[0]}" if context else name


def _unclosed_line(env: Environment, text: str, tag: str) -> int:
    """The line of the innermost `{% tag %}` without its `{% endtag %}` (last line if none)."""
    open_tags: list[tuple[str, int]] = []
    for token in env.tokenizer()(text):
        if token.kind != TOKEN_TAG:
            continue
        if token.value.startswith("end") and any(t == token.value[3:] for t, _ in open_tags):
            while open_tags.pop()[0] != token.value[3:]:
                pass
        else:
            open_tags.append((token.value, token.start_index))
    index = next((i for t, i in reversed(open_tags) if t == tag), max(len(text) - 1, 0))
    return Span("", index).line_col(text)[0] if text else 1


# `{{ gtrun.<value> }}` or `{{ gtrun.<value> | default: "text" }}`: filled in when gtrun builds the job
_JOB_VALUE = re.compile(r"""\{\{-?\s*gtrun\.(\w+)\s*(?:\|\s*default:\s*(?:"([^"]*)"|'([^']*)'))?\s*-?\}\}""")
JOB_VALUES = {"title": "text", "description": "text", "instructions": "html"}  # template.<key>, and its kind
_JOB_VALUE_USE = re.compile(r"\{[{%][^}]*?\bgtrun\.(\w+)")  # any other use of one, inside {{ }} or {% %}


_DELIMITERS = re.compile(r"\{[{%]|[%}]\}")


def _inert(value: str) -> str:
    """`value` with Liquid's delimiters ({{ {% %} }}) written as HTML character references: the
    browser shows the same braces, Ground Truth's Liquid sees no tag or output in them.

    >>> _inert("{{ a }} and {% raw %}")
    '&#123;{ a }&#125; and &#123;% raw %&#125;'
    """
    return _DELIMITERS.sub(lambda m: m.group(0).replace("{", "&#123;", 1) if m.group(0)[0] == "{"
                           else m.group(0)[0] + "&#125;", value)


def fill_job_values(text: str, values: Mapping[str, str | None], name: str) -> str:
    """The template with the job's own values in place of `{{ gtrun.title }}`, `{{ gtrun.description }}`
    and `{{ gtrun.instructions }}` (template.title, .description, .instructions): what workers see
    comes from the config, in every template. Ground Truth renders `task.input` per task; these are
    the job's, so gtrun writes them in once, before the template is checked and uploaded. Title and
    description are text (HTML-escaped), the instructions HTML. An unset value gives the expression's
    `default:` text, or nothing; an unknown `gtrun.` value is a TemplateError naming the line.

    >>> fill_job_values('<h1>{{ gtrun.title | default: "Label it" }}</h1>', {"title": "Cats & dogs"}, "t")
    '<h1>Cats &amp; dogs</h1>'
    >>> fill_job_values('<h1>{{ gtrun.title | default: "Label it" }}</h1>', {"title": None}, "t")
    '<h1>Label it</h1>'
    """
    def fill(match: re.Match[str]) -> str:
        key, default = match.group(1), match.group(2) if match.group(2) is not None else match.group(3)
        if key not in JOB_VALUES:
            line = text.count("\n", 0, match.start()) + 1
            raise TemplateError(f"{name}:{line}: gtrun.{key} is not a job value; the template can use "
                                + ", ".join(f"gtrun.{k}" for k in JOB_VALUES))
        value = values.get(key)
        if not value:
            return _inert(html.escape(default or "", quote=True))
        if JOB_VALUES[key] == "text":
            value = html.escape(value, quote=True)
        return _inert(value)

    filled = _JOB_VALUE.sub(fill, text)
    left = _JOB_VALUE_USE.search(filled)
    if left:
        line = filled.count("\n", 0, left.start()) + 1
        raise TemplateError(f"{name}:{line}: gtrun.{left.group(1)} is filled in by gtrun only as "
                            f"{{{{ gtrun.{left.group(1)} }}}} or {{{{ gtrun.{left.group(1)} | default: '...' }}}}, "
                            "with no other filter or tag around it")
    return filled


def parse_template(text: str, name: str, env: Environment | None = None) -> BoundTemplate:
    """The parsed template; a syntax error raises TemplateError("<name>:<line>: ...")."""
    env = env if env is not None else gt_environment()
    try:
        return env.from_string(text, name=name)
    except LiquidError as exc:
        unclosed = _UNCLOSED.match(str(exc.message)) if exc.context() is None else None
        if unclosed:  # python-liquid points at the end of input (index -1): find the opener
            tag = unclosed.group(1)
            line = _unclosed_line(env, text, tag)
            raise TemplateError(f"{name}:{line}: {{% {tag} %}} is never closed "
                                f"(expected {{% end{tag} %}})") from exc
        raise TemplateError(f"{_where(name, exc)}: {exc.message}") from exc


def task_input(task_type: TaskType, line: Mapping[str, Any],
               labels: Sequence[str]) -> dict[str, Any]:
    """What the worker template sees as `task.input` for one manifest line.

    Built-in task types go through the AWS PRE-<Type> Lambda, which passes the data object and
    the label list; custom tasks (no pre-annotation Lambda) see the manifest line itself.

    >>> task_input(TaskType.text_classification, {"source": "great", "id": 1}, ["pos", "neg"])
    {'taskObject': 'great', 'labels': ['pos', 'neg']}
    >>> task_input(TaskType.bounding_box, {"source-ref": "s3://b/1.jpg"}, ["car"])
    {'taskObject': 's3://b/1.jpg', 'labels': ['car']}
    >>> task_input(TaskType.custom, {"source": "great", "id": 1}, ["pos"])
    {'source': 'great', 'id': 1}
    """
    if task_type is TaskType.custom:
        return dict(line)
    field = next((f for f in OBJECT_FIELDS if f in line), None)
    if field is None:
        raise ManifestError(f"manifest line: has neither source nor source-ref "
                            f"(keys: {sorted(line)!r})")
    return {"taskObject": line[field], "labels": list(labels)}


def task_field_problems(task_type: TaskType, fields: Sequence[str], origin: str) -> list[ConfigError]:
    """The problem, if any, with a built-in task type reading manifest lines that have `fields`
    (which `origin`, source.columns or source.sql, makes): its data object field must be one of them.

    >>> [problem] = task_field_problems(TaskType.bounding_box, ["entity", "source"], "source.columns")
    >>> print(problem)  # doctest: +ELLIPSIS
    template: a bounding_box job reads each object's image from "source-ref"; the manifest lines have source, entity ...
      hint: map a column of s3:// image URIs to source-ref in source.columns, or pick a text template ...
    >>> task_field_problems(TaskType.custom, ["entity"], "source.columns")
    []
    """
    field = TASK_OBJECT_FIELD.get(task_type)
    if field is None or field in fields:
        return []
    kind = _OBJECT_KIND[field]
    have = [f for f in OBJECT_FIELDS if f in fields]
    listed = ", ".join([*have, *(f for f in fields if f not in have)])
    where = (f"alias a column of {'s3:// image URIs' if kind == 'image' else 'text'} AS \"{field}\" in source.sql"
             if origin == "source.sql" else
             f"map a column of {'s3:// image URIs' if kind == 'image' else 'text'} to {field} in source.columns")
    fits = [t.value for t, f in TASK_OBJECT_FIELD.items() if have and f == have[0]]
    other = (f", or pick {'an image' if _OBJECT_KIND[have[0]] == 'image' else 'a text'} template "
             f"(task_type {', '.join(fits)} or custom)") if fits else ""
    return [ConfigError("template", f"a {task_type.value} job reads each object's {kind} from \"{field}\"; "
                        f"the manifest lines have {listed} (from {origin})", where + other)]


def _paths(expr: Expression) -> Iterator[Path]:
    if isinstance(expr, Path):
        yield expr
    for child in expr.children():
        yield from _paths(child)


def _location(path: Path) -> tuple[Any, ...]:
    location = path.location()
    while location and location[-1] in _PROBES:
        location = location[:-1]
    return location


def _guarded(template: BoundTemplate) -> set[int]:
    """Start indices of the paths a missing value cannot break.

    Guarded: a path tested by if/elsif/unless/case/when, the input of a `default` filter, and
    a path (or its extension) used inside a block whose condition tests it. Guards are
    over-approximated (an `else` branch counts too): the static check must not refuse a
    template that renders, and render_task still catches what it lets through.
    """
    guarded: set[int] = set()
    static = RenderContext(template)

    def expression(expr: Expression, guards: frozenset[tuple[Any, ...]]) -> None:
        if (isinstance(expr, FilteredExpression) and expr.filters
                and expr.filters[0].name == "default"):
            guarded.update(p.token.start_index for p in _paths(expr.left))
        if isinstance(expr, Path):
            location = expr.location()
            if any(location[:len(g)] == g for g in guards):
                guarded.add(expr.token.start_index)
        for child in expr.children():
            expression(child, guards)

    def visit(node: Node, guards: frozenset[tuple[Any, ...]]) -> None:
        conditional = isinstance(node, (IfNode, UnlessNode, ConditionalBlockNode, CaseNode,
                                        MultiExpressionBlockNode))
        for expr in node.expressions():
            expression(expr, guards)
            if conditional:
                tested = list(_paths(expr))
                guarded.update(p.token.start_index for p in tested)
                guards = guards | {_location(p) for p in tested}
        for child in node.children(static, include_partials=False):
            visit(child, guards)

    for node in template.nodes:
        visit(node, frozenset())
    return guarded


def _lookup(context: RenderContext, segments: list[Any]) -> object:
    path: list[object] = []
    for segment in segments:
        if isinstance(segment, list):  # a bracketed path: task.input[task.input.key]
            segment = _lookup(context, segment)
            if segment is _MISSING:
                return _MISSING
        path.append(segment)
    return context.get(path, token=None, default=_MISSING)


def _missing_uses(template: BoundTemplate, task_input: Mapping[str, Any]) -> dict[str, int]:
    """Each unguarded variable the render namespace lacks -> the line of its first use."""
    guarded = _guarded(template)
    context = RenderContext(template, globals={"task": {"input": task_input}})
    missing: dict[str, int] = {}
    for uses in template.analyze(include_partials=False).globals.values():
        for use in uses:
            index = use.span.index
            if index in guarded or _lookup(context, use.segments) is not _MISSING:
                continue
            name = str(use)  # dotted and bracket spellings of one path print the same
            line = use.span.line_col(template.nodes[0].token.source)[0]
            missing[name] = min(missing.get(name, line), line)
    return missing


def missing_variables(template: BoundTemplate, task_input: Mapping[str, Any]) -> list[str]:
    """The variables the template prints or filters that `task.input` lacks, sorted."""
    return sorted(_missing_uses(template, task_input))


def missing_uses(template: BoundTemplate, task_input: Mapping[str, Any]) -> str:
    """The variables `task.input` lacks, each with the line of its first use, in line order
    ("task.input.a (line 3), task.input.b (line 7)"); "" when none is missing."""
    found = sorted(_missing_uses(template, task_input).items(), key=lambda kv: (kv[1], kv[0]))
    return ", ".join(f"{var} (line {line})" for var, line in found)


def render_task(template: BoundTemplate, task_input: Mapping[str, Any], *,
                name: str | None = None) -> str:
    """The worker HTML for one task; Liquid errors raise TemplateError("<name>:<line>: ...")."""
    name = name if name is not None else template.name
    try:
        return template.render(task={"input": task_input})
    except LiquidError as exc:
        raise TemplateError(f"{_where(name, exc)}: {exc.message}") from exc


def check_template(text: str, name: str, task_input: Mapping[str, Any],
                   env: Environment | None = None) -> str:
    """The worker HTML for a sample task, after parsing and checking every variable it uses."""
    template = parse_template(text, name, env)
    missing = sorted(_missing_uses(template, task_input).items(), key=lambda kv: (kv[1], kv[0]))
    if missing:
        (first, line), *rest = missing
        problem = (f"{first} is not in the task input" if not rest else
                   f"{len(missing)} variables are not in the task input: "
                   + ", ".join(f"{var} (line {n})" for var, n in missing))
        raise TemplateError(f"{name}:{line}: {problem}\n  hint: task.input has "
                            f"{sorted(task_input)!r} (built-in task types get taskObject and "
                            f"labels, custom tasks the manifest line); or write `| default: ...`")
    return render_task(template, task_input, name=name)



# The attributes of the crowd elements that submit an answer (reference §5.3), and those each needs:
# without `name` an element's answer is not submitted; without its data a worker has nothing to do.
ELEMENT_ATTRIBUTES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    tag: (frozenset(known.split()), frozenset(required.split())) for tag, known, required in (
        ("crowd-classifier", "name categories header", "name categories"),
        ("crowd-classifier-multi-select", "name categories header exclusion-category", "name categories"),
        ("crowd-image-classifier", "name categories header src overlay", "name categories src"),
        ("crowd-image-classifier-multi-select", "name categories header src exclusion-category",
         "name categories src"),
        ("crowd-bounding-box", "name src header labels initial-value", "name src labels"),
        ("crowd-entity-annotation", "name header text labels initial-value", "name text labels"),
        ("crowd-input", "name label placeholder value type required disabled auto-focus auto-validate "
         "allowed-pattern error-message max-length min-length char-counter max-rows", "name"),
        ("crowd-text-area", "name label placeholder value rows max-rows max-length char-counter disabled "
         "auto-focus auto-validate allowed-pattern error-message required", "name"),
        ("crowd-checkbox", "name value checked disabled required", "name"),
        ("crowd-radio-button", "name value checked disabled", "name"),
    )}
_GLOBAL_ATTRIBUTES = frozenset("id class style slot title hidden lang dir tabindex form".split())
_NOT_MARKUP = re.compile(r"\{%-?\s*(comment|raw)\s*-?%\}.*?\{%-?\s*end\1\s*-?%\}", re.DOTALL)


class _CrowdTags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, str, list[str]]] = []  # (line, tag, attribute names)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        text = self.get_starttag_text() or ""
        if tag in ELEMENT_ATTRIBUTES and "{%" not in text:  # attributes a Liquid tag writes: not known here
            self.found.append((self.getpos()[0], tag, [a for a, _ in attrs]))


def element_problems(text: str, name: str) -> list[str]:
    """"<name>:<line>: ..." for each crowd element that lacks an attribute it needs (`name`, its
    categories, labels, text or src) or has one misspelled (`label` for `labels`).

    >>> element_problems('<crowd-form>\\n<crowd-bounding-box name="b" src="x" label="[]">', "t")
    ['t:2: <crowd-bounding-box> has no labels attribute (it has label: did you mean labels?)']
    >>> element_problems('<crowd-input label="Why?" required></crowd-input>', "t")
    ['t:1: <crowd-input> has no name attribute, so its answer would not be submitted']
    """
    # Liquid comments and raw blocks are not markup: blanked, their lines kept
    source = _NOT_MARKUP.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    parser = _CrowdTags()
    parser.feed(source)
    parser.close()
    problems = []
    for line, tag, attrs in parser.found:
        known, required = ELEMENT_ATTRIBUTES[tag]
        unknown = [a for a in attrs if a not in known and a not in _GLOBAL_ATTRIBUTES
                   and not a.startswith(("data-", "aria-", "on"))]
        typos = {a: close[0] for a in unknown if (close := difflib.get_close_matches(a, known, 1, 0.75))}
        for attr in sorted(required - set(attrs)):
            meant = [a for a, k in typos.items() if k == attr]
            why = (f" (it has {meant[0]}: did you mean {attr}?)" if meant else
                   ", so its answer would not be submitted" if attr == "name" else "")
            problems.append(f"{name}:{line}: <{tag}> has no {attr} attribute{why}")
        problems += [f"{name}:{line}: <{tag}> has a {a} attribute, which it does not take: did you mean {k}?"
                     for a, k in typos.items() if k not in required or k in attrs]
    return problems
