"""Ground Truth's Liquid dialect on real python-liquid: filters, escaping, undefined variables."""

from __future__ import annotations

import html
import json
from html.parser import HTMLParser

import pytest

from runner.build.template import (
    check_template,
    element_problems,
    fill_job_values,
    gt_environment,
    missing_variables,
    parse_template,
    render_task,
    task_input,
)
from runner.errors import ManifestError, TemplateError
from runner.schema import TaskType
from tests.conftest import ROOT

LABELS = ['say "hi"', "a<b & c>d", "it's", "&amp; stays", "naïve ✓ 日本"]


class _Attrs(HTMLParser):
    """Attributes of every start tag, decoded the way a browser decodes them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def attrs(markup: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Attrs()
    parser.feed(markup)
    parser.close()
    return parser.tags


def render(source: str, data: dict, env=None, name: str = "t.liquid") -> str:
    return render_task(parse_template(source, name, env), data)


# --- to_json ----------------------------------------------------------------------------------

def test_to_json_escape_in_attribute_is_escaped_exactly_once():
    out = render('<crowd-classifier categories="{{ task.input.labels | to_json | escape }}">',
                 {"labels": LABELS})
    raw = out.split('categories="')[1].split('">')[0]
    assert '"' not in raw and "<" not in raw  # nothing can end the attribute or open a tag
    assert json.loads(html.unescape(raw)) == LABELS  # one unescape gives the JSON back
    assert "&amp;amp;amp;" not in raw  # "&amp; stays" is escaped once: &amp;amp;
    [(_, found)] = attrs(out)
    assert json.loads(found["categories"]) == LABELS


def test_to_json_is_autoescaped_like_any_value():
    with_escape = render("{{ task.input.labels | to_json | escape }}", {"labels": LABELS})
    assert render("{{ task.input.labels | to_json }}", {"labels": LABELS}) == with_escape


def test_to_json_is_compact_and_keeps_unicode():
    out = render("{{ task.input.o | to_json | skip_autoescape }}",
                 {"o": {"point_number": 8, "coords": [59, 76], "name": "日本"}})
    assert out == '{"point_number":8,"coords":[59,76],"name":"日本"}'


def test_to_json_skip_autoescape_for_script_blocks():
    out = render("<script>var labels = {{ task.input.labels | to_json | skip_autoescape }};"
                 "</script>", {"labels": LABELS})
    assert json.loads(out.removeprefix("<script>var labels = ").removesuffix(";</script>")) \
        == LABELS


# --- escape, escape_once, skip_autoescape, autoescape -------------------------------------------

@pytest.mark.parametrize(("source", "expected"), [
    # The Developer Guide's filter examples (sms-custom-templates-step2-automate).
    ("""{{ "Have you read 'James & the Giant Peach'?" }}""",
     "Have you read &#39;James &amp; the Giant Peach&#39;?"),
    ("""{{ "Have you read 'James & the Giant Peach'?" | escape }}""",
     "Have you read &#39;James &amp; the Giant Peach&#39;?"),
    ("""{{ "Have you read 'James &amp; the Giant Peach'?" | escape_once }}""",
     "Have you read &#39;James &amp; the Giant Peach&#39;?"),
    ("""{{ "Have you read 'James & the Giant Peach'?" | skip_autoescape }}""",
     "Have you read 'James & the Giant Peach'?"),
])
def test_developer_guide_filter_examples(source, expected):
    assert render(source, {}) == expected


def test_escape_once_keeps_entities():
    assert render("{{ task.input.s | escape_once }}", {"s": "&amp; <"}) == "&amp; &lt;"
    assert render("{{ task.input.s | escape_once }}", {"s": "&#39; &#x27; & &lt"}) \
        == "&#39; &#x27; &amp; &amp;lt"


def test_escape_is_not_doubled_by_autoescape():
    assert render("{{ task.input.s | escape }}", {"s": "a & b"}) == "a &amp; b"


def test_skip_autoescape_emits_raw_html():
    assert render("{{ task.input.s | skip_autoescape }}", {"s": "<b>bold</b> & co"}) \
        == "<b>bold</b> & co"


@pytest.mark.parametrize(("source", "expected"), [
    ('{% assign h = "<b>Tom & Jerry</b>" %}{{ h }}', "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;"),
    ('{{ task.input.s | append: "<br>" }}', "a&amp;b&lt;br&gt;"),
    ('{{ "<i>" | append: task.input.s }}', "&lt;i&gt;a&amp;b"),
    ('{{ "<br>" | skip_autoescape }}', "<br>"),
])
def test_string_literals_are_escaped_like_values(source, expected):
    assert render(source, {"s": "a&b"}) == expected


def test_autoescape_in_text():
    out = render("<p>{{ task.input.source }}</p>", {"source": "<script>alert(1)</script>"})
    assert out == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"


@pytest.mark.parametrize("payload", ['" onmouseover="x', "' onmouseover='x",
                                     "<script>alert(1)</script>"])
def test_autoescape_in_attributes(payload):
    out = render("""<a title="{{ task.input.t }}" alt='{{ task.input.t }}'>x</a>""",
                 {"t": payload})
    assert "<script>" not in out
    [(tag, found)] = attrs(out)
    assert tag == "a" and found == {"title": payload, "alt": payload}


# --- grant_read_access --------------------------------------------------------------------------

def test_grant_read_access_calls_the_callable():
    calls = []

    def presign(uri: str) -> str:
        calls.append(uri)
        return "https://s3.amazonaws.com/b/k.jpg?X-Amz-Signature=abc&X-Amz-Expires=900"

    env = gt_environment(grant_read_access=presign)
    out = render('<img src="{{ task.input.taskObject | grant_read_access }}">',
                 {"taskObject": "s3://b/k.jpg"}, env)
    assert calls == ["s3://b/k.jpg"]
    assert out == ('<img src="https://s3.amazonaws.com/b/k.jpg?X-Amz-Signature=abc'
                   '&amp;X-Amz-Expires=900">')
    [(_, found)] = attrs(out)
    assert found["src"].endswith("abc&X-Amz-Expires=900")


def test_grant_read_access_default_leaves_the_uri():
    assert render("{{ task.input.u | grant_read_access }}", {"u": "s3://b/a b.jpg"}) \
        == "s3://b/a b.jpg"


def test_grant_read_access_only_presigns_s3_uris():
    calls = []
    env = gt_environment(grant_read_access=lambda uri: calls.append(uri) or "signed")
    assert render("{{ task.input.u | grant_read_access }}",
                  {"u": "https://example.com/a.jpg"}, env) == "https://example.com/a.jpg"
    assert calls == []


def test_grant_read_access_failure_names_file_and_line():
    def refuse(uri: str) -> str:
        raise ValueError(f"cannot presign {uri}")

    template = parse_template("<p>\n<img src=\"{{ task.input.u | grant_read_access }}\">",
                              "img.liquid", gt_environment(grant_read_access=refuse))
    with pytest.raises(TemplateError, match=r"^img\.liquid:2: grant_read_access: cannot presign"):
        render_task(template, {"u": "s3://b/k"})


# --- undefined variables ------------------------------------------------------------------------

MISSING_ON_LINE_3 = "<crowd-form>\n  <p>{{ task.input.source }}</p>\n  {{ task.input.entity }}\n"


def test_render_reports_missing_variable_with_file_and_line():
    template = parse_template(MISSING_ON_LINE_3, "my.liquid")
    with pytest.raises(TemplateError, match=r"^my\.liquid:3: task\.input\.entity is undefined"):
        render_task(template, {"source": "x"})


def test_check_template_reports_missing_variable_with_file_and_line():
    with pytest.raises(TemplateError, match=r"^my\.liquid:3: task\.input\.entity is not in"):
        check_template(MISSING_ON_LINE_3, "my.liquid", {"source": "x"})


def test_check_template_lists_every_missing_variable():
    text = "{{ task.input.a }}\n{{ task.input.b.c }}\n{{ task.input.a }}{{ task.inpt.x }}"
    with pytest.raises(TemplateError) as err:
        check_template(text, "t.liquid", {"b": {}})
    assert str(err.value).startswith(
        "t.liquid:1: 3 variables are not in the task input: task.input.a (line 1), "
        "task.input.b.c (line 2), task.inpt.x (line 3)\n  hint: task.input has ['b']")


def test_check_template_renders_when_nothing_is_missing():
    assert check_template("<p>{{ task.input.entity }}</p>", "t.liquid", {"entity": "<x>"}) \
        == "<p>&lt;x&gt;</p>"


@pytest.mark.parametrize("source", ["{{ task.input.missing | upcase }}",
                                    "{{ task.input.missing | to_json }}",
                                    "{{ task.input.missing | escape }}",
                                    "{{ task.input.missing | skip_autoescape }}",
                                    "{% for x in task.input.missing %}{{ x }}{% endfor %}"])
def test_using_a_missing_variable_is_an_error(source):
    template = parse_template("\n" + source, "t.liquid")
    with pytest.raises(TemplateError, match=r"^t\.liquid:2: task\.input\.missing is undefined"):
        render_task(template, {})


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ task.input.missing | default: 'q' }}", "q"),
    ("{{ task.input.missing.deeper | default: 'q' | upcase }}", "Q"),
    ("{% assign v = task.input.missing | default: 'z' %}{{ v }}", "z"),
    ("{% if task.input.missing %}yes{% else %}no{% endif %}", "no"),
    ("{% unless task.input.missing %}none{% endunless %}", "none"),
    ("{% if task.input.missing == nil %}nil{% endif %}", "nil"),
    ("{% if task.input.missing == 'a' %}a{% else %}other{% endif %}", "other"),
    ("{% case task.input.missing %}{% when 'a' %}a{% else %}other{% endcase %}", "other"),
    ("{% if task.input.missing.size > 0 %}some{% else %}none{% endif %}", "none"),
])
def test_missing_variable_is_nil_where_liquid_tests_it(source, expected):
    assert render(source, {}) == expected
    assert missing_variables(parse_template(source, "t.liquid"), {}) == []


def test_default_keeps_a_present_value():
    assert render("{{ task.input.x | default: 'q' }}", {"x": "<v>"}) == "&lt;v&gt;"


# --- syntax errors ------------------------------------------------------------------------------

def test_syntax_error_names_file_and_line():
    with pytest.raises(TemplateError, match=r"^bad\.liquid:2: missing expression"):
        parse_template("<p>\n{% if %}x{% endif %}", "bad.liquid")


def test_unclosed_block_names_its_opening_line():
    text = "<p>\n{% if task.input.x %}\n{% for l in task.input.labels %}{{ l }}{% endfor %}\n</p>"
    expected = r"^bad\.liquid:2: \{% if %\} is never closed \(expected \{% endif %\}\)"
    with pytest.raises(TemplateError, match=expected):
        parse_template(text, "bad.liquid")


def test_unknown_filter_names_file_and_line():
    with pytest.raises(TemplateError, match=r"^bad\.liquid:3: unknown filter 'nosuch'"):
        render_task(parse_template("\n\n{{ task.input.x | nosuch }}", "bad.liquid"), {"x": 1})


# --- missing_variables --------------------------------------------------------------------------

def test_missing_variables_finds_absent_field():
    template = parse_template("<p>{{ task.input.source }}</p>{{ task.input.entity }}", "t")
    assert missing_variables(template, {"source": "x"}) == ["task.input.entity"]
    assert missing_variables(template, {"source": "x", "entity": "y"}) == []


def test_missing_variables_ignores_loop_and_assign_locals():
    template = parse_template(
        "{% for l in task.input.labels %}{{ l }}{{ l.name }}{{ forloop.index }}{% endfor %}"
        "{% assign first = task.input.labels | first %}{{ first }}"
        "{% capture c %}{{ task.input.source }}{% endcapture %}{{ c }}", "t")
    assert missing_variables(template, {"labels": ["a"], "source": "s"}) == []
    assert missing_variables(template, {"source": "s"}) == ["task.input.labels"]


def test_missing_variables_ignores_guarded_paths():
    template = parse_template(
        "{{ task.input.a | default: task.input.b }}"
        "{% if task.input.opt %}{{ task.input.opt.note }}{% endif %}"
        "{% if task.input.items.size > 0 %}{{ task.input.items | join: ',' }}{% endif %}", "t")
    # The default's argument is still read when its input is absent.
    assert missing_variables(template, {}) == ["task.input.b"]


def test_missing_variables_nested_and_indexed_paths():
    template = parse_template("{{ task.input.meta.author }}{{ task.input.labels[2] }}"
                              "{{ task.input.labels.size }}{{ task.input.source.size }}", "t")
    assert missing_variables(template, {"meta": {}, "labels": ["a"], "source": "s"}) == [
        "task.input.labels[2]", "task.input.meta.author"]


def test_missing_variables_reports_other_globals():
    template = parse_template("{{ task.inputs.source }}{{ title }}", "t")
    assert missing_variables(template, {"source": "x"}) == ["task.inputs.source", "title"]


# --- hyphenated keys ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["task.input.source-ref", 'task.input["source-ref"]',
                                  "task.input['source-ref']"])
def test_hyphenated_keys_render_and_check(path):
    env = gt_environment(grant_read_access=lambda uri: "https://signed/" + uri[5:])
    template = parse_template(f'<img src="{{{{ {path} | grant_read_access }}}}">', "t", env)
    assert render_task(template, {"source-ref": "s3://b/k.jpg"}) \
        == '<img src="https://signed/b/k.jpg">'
    assert missing_variables(template, {"source-ref": "s3://b/k.jpg"}) == []
    # Both spellings print as the dotted path python-liquid parses them to.
    assert missing_variables(template, {"source": "x"}) == ["task.input.source-ref"]


def test_hyphen_is_not_subtraction():
    data = {"source": "x", "ref": 1, "source-ref": "y"}
    assert render("{{ task.input.source-ref }}", data) == "y"


# --- task_input ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("task_type", "line", "expected"), [
    (TaskType.text_classification, {"source": "great", "id": 1},
     {"taskObject": "great", "labels": ["pos", "neg"]}),
    (TaskType.text_multilabel, {"source": "great", "id": 1},
     {"taskObject": "great", "labels": ["pos", "neg"]}),
    (TaskType.named_entity, {"source": "Ada in London"},
     {"taskObject": "Ada in London", "labels": ["pos", "neg"]}),
    (TaskType.bounding_box, {"source-ref": "s3://b/1.jpg", "id": 1},
     {"taskObject": "s3://b/1.jpg", "labels": ["pos", "neg"]}),
    (TaskType.custom, {"source": "great", "id": 1, "source-ref": "s3://b/1.jpg"},
     {"source": "great", "id": 1, "source-ref": "s3://b/1.jpg"}),
])
def test_task_input_for_each_task_type(task_type, line, expected):
    assert task_input(task_type, line, ("pos", "neg")) == expected


def test_task_input_covers_every_task_type():
    for task_type in TaskType:
        assert task_input(task_type, {"source": "x"}, ["a"])


def test_task_input_needs_a_data_object():
    with pytest.raises(ManifestError, match="neither source nor source-ref"):
        task_input(TaskType.text_classification, {"id": 1}, ["a"])


def test_task_input_feeds_a_builtin_style_template():
    line = {"source": "Tom & Jerry <3", "id": 7}
    template = ('<crowd-classifier categories="{{ task.input.labels | to_json | escape }}">\n'
                "<classification-target>{{ task.input.taskObject }}</classification-target>")
    out = check_template(template, "text.liquid",
                         task_input(TaskType.text_classification, line, LABELS))
    [(_, found), _] = attrs(out)
    assert json.loads(found["categories"]) == LABELS
    assert "Tom &amp; Jerry &lt;3" in out
    with pytest.raises(TemplateError, match=r"^text\.liquid:2: task\.input\.source is not in"):
        check_template(template.replace("taskObject", "source"), "text.liquid",
                       task_input(TaskType.text_classification, line, LABELS))


def test_job_values_are_filled_in_once_for_every_task():
    text = ('<crowd-classifier header="{{ gtrun.title | default: \'Pick one\' }}">\n'
            "<short-instructions>{{ gtrun.instructions }}</short-instructions>\n"
            "<p>{{gtrun.description}}</p>{{ task.input.taskObject }}</crowd-classifier>")
    filled = fill_job_values(text, {"title": 'Is it "good" & kind?', "description": "Use {{ care }}",
                                    "instructions": "<p>Read <b>all</b> of it.</p>"}, "t.liquid")
    assert 'header="Is it &quot;good&quot; &amp; kind?"' in filled  # text: escaped for HTML
    assert "<short-instructions><p>Read <b>all</b> of it.</p></short-instructions>" in filled  # HTML as written
    assert "<p>Use &#123;{ care }&#125;</p>" in filled  # the job's text, never Liquid to run: shown as braces
    assert "{{ task.input.taskObject }}" in filled and "gtrun." not in filled
    rendered = render_task(parse_template(filled, "t.liquid"), {"taskObject": "x", "labels": []})
    assert "<p>Use &#123;{ care }&#125;</p>" in rendered and html.unescape("&#123;{ care }&#125;") == "{{ care }}"
    # a title cannot end a raw block or open a tag of its own: it stays text on every task
    sly = "x{% endraw %}{{ task.input.taskObject | skip_autoescape }}{% raw %}y"
    page = render_task(parse_template(fill_job_values(text, {"title": sly}, "t.liquid"), "t.liquid"),
                       {"taskObject": "<img src=x onerror=alert(1)>", "labels": []})
    assert "<img src=x" not in page and html.unescape(page.split('header="')[1].split('"')[0]) == sly
    unset = fill_job_values(text, {}, "t.liquid")
    assert 'header="Pick one"' in unset and "<short-instructions></short-instructions>" in unset
    with pytest.raises(TemplateError, match=r"t\.liquid:2: gtrun\.instruction is not a job value"):
        fill_job_values("x\n{{ gtrun.instruction }}", {}, "t.liquid")
    # another filter or a tag would be left to Ground Truth, where gtrun is nil: refused, by line
    for use in ("{{ gtrun.title | escape }}", "{{ gtrun.instructions | default: 'x' | strip }}",
                "{% if gtrun.title %}y{% endif %}"):
        with pytest.raises(TemplateError, match=r"t\.liquid:3: gtrun\.\w+ is filled in by gtrun only as"):
            fill_job_values("a\nb\n" + use, {"title": "T", "instructions": "I"}, "t.liquid")


@pytest.mark.parametrize("path", sorted((ROOT / "templates").glob("*.liquid")), ids=lambda p: p.stem)
def test_bundled_templates_show_the_jobs_title_and_instructions(path):
    """Each bundled template's instructions come from template.instructions, and the built-in task
    types' question from template.title; unfilled (pasted into the console) they read their defaults."""
    text = path.read_text()
    filled = fill_job_values(text, {"title": "TITLE-X", "instructions": "<p>INSTR-X</p>"}, path.name)
    assert "<p>INSTR-X</p>" in filled
    assert ('header="TITLE-X"' in filled) == (path.stem not in ("custom", "receipts_ner"))
    assert "gtrun." not in fill_job_values(text, {}, path.name)


# --- crowd element attributes --------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted((ROOT / "templates").glob("*.liquid")), ids=lambda p: p.name)
def test_bundled_templates_give_their_elements_every_attribute_they_need(path):
    assert element_problems(path.read_text(), path.name) == []


def test_element_problems_name_the_line_and_the_attribute():
    text = ('<crowd-form>\n{% comment %}<crowd-classifier>{% endcomment %}\n'
            '<crowd-classifier name="c" categorie="[\'a\']" header="h"></crowd-classifier>\n'
            '<crowd-entity-annotation name="e" labels="[]"></crowd-entity-annotation>\n'
            '<crowd-text-area name="t" max-lenght="9" data-x="1" class="k"></crowd-text-area>\n'
            '<crowd-checkbox {% if task.input.x %}checked{% endif %}></crowd-checkbox>\n'
            '<crowd-radio-group><crowd-radio-button value="a"></crowd-radio-button></crowd-radio-group>')
    assert element_problems(text, "t.liquid") == [
        "t.liquid:3: <crowd-classifier> has no categories attribute (it has categorie: did you mean categories?)",
        "t.liquid:4: <crowd-entity-annotation> has no text attribute",
        "t.liquid:5: <crowd-text-area> has a max-lenght attribute, which it does not take: did you mean max-length?",
        "t.liquid:7: <crowd-radio-button> has no name attribute, so its answer would not be submitted"]
