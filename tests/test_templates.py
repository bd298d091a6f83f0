"""The template sandbox, strict undefined names, and what `check()` finds before anything runs."""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from jinja2.exceptions import (
    SecurityError,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
)

from ralph import sandbox
from ralph.errors import RecipeError
from ralph.recipe.validate import load_recipe
from ralph.sandbox import MAX_OUTPUT_CHARS
from ralph.templates import (
    Scope,
    TemplateFinding,
    base_context,
    check,
    compile_template,
    environment,
    render,
)

TASK_SCOPE = Scope(
    names=frozenset({"vars", "task", "outputs"}),
    vars=frozenset({"tone", "audience"}),
    outputs=frozenset({"summarize"}),
)
ITEM_SCOPE = Scope(TASK_SCOPE.names | {"item"}, TASK_SCOPE.vars, TASK_SCOPE.outputs)


def render_text(source: str, **context: Any) -> str:
    return render(compile_template(source), base_context(**context))


def messages(source: str, scope: Scope = TASK_SCOPE) -> list[str]:
    return [finding.message for finding in check(source, scope)]


# --- the sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.environ }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ namespace.__init__ }}",
        "{{ self.__init__ }}",
        "{{ ''|attr('__class__') }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{{ vars.__class__ }}",
        "{{ item.__class__.__base__ }}",
    ],
)
def test_python_internals_are_out_of_reach(source: str) -> None:
    with pytest.raises(SecurityError, match="is unsafe"):
        render_text(source, vars=MappingProxyType({"tone": "terse"}), item={"id": 1})


@pytest.mark.parametrize("name", ["os", "open", "environ", "__builtins__", "config", "import"])
def test_there_is_no_environment_or_filesystem_in_scope(name: str) -> None:
    with pytest.raises(UndefinedError, match=f"'{name}' is undefined"):
        render_text(f"{{{{ {name} }}}}")
    assert messages(f"{{{{ {name} }}}}") == [
        f"undefined template variable '{name}' (available here: outputs, task, vars)"
    ]


@pytest.mark.parametrize(
    "source",
    ["{% include '/etc/passwd' %}", "{% import 'macros.j2' as m %}", "{% extends 'base.j2' %}"],
)
def test_templates_cannot_load_files(source: str, tmp_path: Path) -> None:
    (tmp_path / "macros.j2").write_text("{% macro m() %}secret{% endmacro %}")
    assert environment().loader is None
    with pytest.raises(TypeError, match="no loader"):
        render_text(source)


def test_templates_cannot_change_what_they_are_given() -> None:
    item = {"id": 7, "tags": ["a"]}
    for source in (
        "{{ item.pop('id') }}",
        "{{ item.update(id=8) }}",
        "{{ item.tags.append('b') }}",
    ):
        with pytest.raises(SecurityError):
            render_text(source, item=item)
    assert item == {"id": 7, "tags": ["a"]}


def test_ordinary_templates_render_frozen_vars_plainly() -> None:
    context = {
        "vars": MappingProxyType({"tone": "terse", "tags": ("a", "b")}),
        "item": {"id": 7, "body": "<b>hot</b>"},
    }
    source = (
        "{{ vars.tone }} {{ vars['tone'] }} {{ vars.tags | join(',') }}"
        " {{ vars.get('missing', 'dflt') }}\n"
        "{% set ns = namespace(n=0) %}{% for t in vars.tags %}{% set ns.n = ns.n + 1 %}{% endfor %}"
        "{{ ns.n }} {{ item.body }}\n"
    )
    # no HTML escaping (prompts are not HTML) and the trailing newline is kept
    rendered = render(compile_template(source), base_context(**context))
    assert rendered == "terse terse a,b dflt\n2 <b>hot</b>\n"


# --- bounds: a few bytes of template cannot take the machine ------------------------------------


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        # each only just past its limit, so that even unbounded it is quickly wrong, not a hang
        ("{{ 7 ** 20000 }}", r"'\*\*' would make a number of about 16902 digits"),
        ("{{ 2 ** 200000000 }}", r"'\*\*' would make a number of about 60205999 digits"),
        ("{{ (10 ** 4000) * (10 ** 4000) }}", r"'\*' would make a number of about 8000 digits"),
        ("{{ 'ab' * 6000000 }}", r"'\*' would build 12000000 characters"),
        ("{{ 6000000 * ['a', 'b'] }}", r"'\*' would build 12000000 characters or items"),
        ("{{ '%12000000d' % 1 }}", r"'%' would build 12000000 characters"),
        ("{{ '%d %.12000000f' % (1, 2.0) }}", r"'%' would build 12000000 characters"),
        ("{{ '%12000000d'|format(1) }}", r"\|format would build 12000000 characters"),
        ("{{ 'x'|center(12000000) }}", r"\|center would build 12000000 characters"),
        ("{{ 'a\nb'|indent(6000000) }}", r"\|indent would build 12000000 characters"),
        ("{{ [1]|batch(12000000, 0)|list }}", r"\|batch would build 12000000 characters"),
    ],
)
def test_constant_expressions_past_a_limit_are_refused_not_computed(
    source: str, refused: str
) -> None:
    # Jinja computes constant expressions while compiling, which is what `check()` (validate)
    # does: these must be left to the render, which refuses them
    assert messages(source) == []
    assert len(environment().compile(source, raw=True)) < 10_000
    with pytest.raises(SecurityError, match=f"{refused}.*at most"):
        render_text(source)


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("{{ '%*d' % (12000000, 1) }}", "'%' would build 12000001"),
        ("{{ 'x'.ljust(12000000) }}", "str.ljust would build 12000000"),
        ("{{ ('\t' * 12).expandtabs(tabsize=1000000) }}", "str.expandtabs would build 12000000"),
        ("{{ '{:12000000}'.format(1) }}", "str.format would build 12000000"),
        ("{{ '{:{w}}'.format(1, w=12000000) }}", "str.format would build 12000001"),
        ("{{ '{a:{w}}'.format_map({'a': 1, 'w': 12000000}) }}", "str.format_map would build"),
        ("{{ lipsum(10000) }}", r"lipsum\(\) would build 15000000"),
        # what a value copies in: text doubled, joined, repeated through a format
        ("{% set a = 'x' * 6000000 %}{{ a + a }}", "'\\+' would build 12000000"),
        ("{% set a = ['x'] * 6000000 %}{{ a + a }}", "'\\+' would build 12000000"),
        ("{% set a = 'x' * 6000000 %}{% set b = a ~ a %}", "'~' would build 12000000"),
        ("{% set a = 'x' * 100000 %}{{ ([a] * 120)|join }}", "\\|join would build 10100000"),
        ("{% set a = 'x' * 100000 %}{{ ('%s' * 120) % ((a,) * 120) }}", "'%' would build 12000000"),
        ("{% set a = 'x' * 100000 %}{{ ('{}' * 120).format(*((a,) * 120)) }}", "str.format"),
        ("{% set a = 'x' * 6000000 %}{{ a|replace('x', 'yy')|length }}", "\\|replace would"),
        ("{{ ([[1] * 10] * 10)|sum(start=[]) }}", "\\|sum adds numbers"),
        # what Jinja's own join would not count: autoescaped '~', iterators, attributes, lists
        (
            "{% autoescape true %}{% set a = 'x' * 6000000 %}{{ a ~ a }}{% endautoescape %}",
            "'~' would build 12000000",
        ),
        ("{% set a = 'x' * 6000000 %}{{ ([a] * 2)|map('string')|join }}", "\\|join would"),
        ("{% set a = 'x' * 6000000 %}{{ ([{'k': a}] * 2)|join(attribute='k') }}", "\\|join would"),
        ("{% set a = 'x' * 6000000 %}{{ ([[a]] * 2)|join }}", "\\|join would"),
    ],
)
def test_calls_that_would_build_too_much_are_refused(source: str, refused: str) -> None:
    with pytest.raises(SecurityError, match=refused):
        render_text(source)


def test_ordinary_arithmetic_formatting_and_widths_still_work() -> None:
    source = (
        "{{ 2 ** 10 }} {{ 2 ** -1 }} {{ 'ab' * 3 }} {{ [0] * 2 }} {{ 7 % 4 }}"
        " {{ '%5.2f' % 3.14159 }} {{ '%(n)d%%' % {'n': 5} }}"
        " {{ '%d-%s' | format(1, 'a') }} [{{ 'x' | center(5) }}]"
        " [{{ '{:>4}'.format('a') }}] [{{ 'a'.ljust(3) }}] {{ [1, 2, 3] | batch(2, 0) | list }}"
        " {{ 1 + 2 }} {{ 'a' + 'b' }} {{ 'a' ~ 1 ~ none }} {{ ['a', 'b'] | join(', ') }}"
        " {{ [1, 2] | sum }} {{ 'abc' | replace('b', 'xx') }}"
        " {{ [1, 'a', none] | join('-') }} {{ [{'k': 1}, {'k': 2}] | join(',', attribute='k') }}"
        " {{ ['x', 'y'] | map('upper') | join }}"
        " {% autoescape true %}{{ '<a>' ~ 'b' }}{% endautoescape %}"
    )
    assert render_text(source) == (
        "1024 0.5 ababab [0, 0] 3  3.14 5% 1-a [  x  ] [   a] [a  ] [[1, 2], [3, 0]]"
        " 3 ab a1None a, b 3 axxc 1-a-None 1,2 XY &lt;a&gt;b"
    )
    assert len(render_text("{{ lipsum(2, html=False) }}")) > 20


def test_a_rendering_longer_than_the_limit_is_refused() -> None:
    # one-letter chunks would reach the limit too, in seconds: these reach it in milliseconds
    source = "{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}"
    with pytest.raises(SecurityError, match=f"longer than {MAX_OUTPUT_CHARS} characters"):
        render_text(source)
    assert len(render_text("{% for i in range(3) %}{{ 'x' * 1000000 }}{% endfor %}")) == 3000000


@pytest.mark.parametrize("kind", [dict, MappingProxyType])
def test_a_field_is_read_as_jinja_reads_it_attribute_first(kind: Any) -> None:
    item = kind({"title": "T", "keys": "a field named keys", "__class__": "x"})
    source = "{{ item.title }}|{{ item['keys'] }}|{{ item.keys() | list | length }}"
    assert render_text(source, item=item) == "T|a field named keys|3"
    with pytest.raises(SecurityError, match="__class__"):  # the attribute, not the field
        render_text("{{ item.__class__ }}", item=item)
    with pytest.raises(UndefinedError, match="no key 'titel' \\(did you mean 'title'"):
        render_text("{{ item.titel }}", item=item)
    refused = SecurityError if kind is dict else UndefinedError  # a mappingproxy has none
    with pytest.raises(refused, match="update"):
        render_text("{{ item.update({'a': 1}) }}", item=item)


def test_frozen_items_and_vars_are_written_as_json() -> None:
    item = MappingProxyType({"id": "x", "d": MappingProxyType({"k": 1}), "l": (1, 2)})
    assert (
        render_text("{{ item | tojson }}", item=item) == '{"d": {"k": 1}, "id": "x", "l": [1, 2]}'
    )


def test_many_small_chunks_come_out_whole_and_in_order() -> None:
    rendered = render_text("{% for i in range(10000) %}{{ i % 10 }}{% endfor %}")
    assert rendered == "0123456789" * 1000


def test_a_render_that_takes_too_long_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "MAX_RENDER_S", 0.3)
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateRuntimeError, match=r"more than 0\.3s to render"):
        render_text(source)
    assert time.monotonic() - started < 5, "stopped, not run to its end (about an hour)"
    assert render_text("{{ 1 + 1 }}") == "2", "and the next render runs as usual"


def test_a_macro_calling_itself_is_a_template_error_not_a_crash() -> None:
    source = "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"
    assert messages(source) == []
    with pytest.raises(TemplateRuntimeError) as caught:
        render_text(source)
    assert str(caught.value) == "templates nested too deeply (a macro calling itself?)"


def test_a_template_nested_too_deeply_to_parse_is_a_finding_not_a_crash() -> None:
    source = "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}"
    assert check(source, TASK_SCOPE) == [
        TemplateFinding(1, "template syntax error: template nested too deeply")
    ]
    with pytest.raises(TemplateSyntaxError, match="template nested too deeply"):
        compile_template(source)


# --- strict undefined at render time ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "missing"),
    [
        ("{{ nope }}", "'nope' is undefined"),
        ("{{ item.missing }}", r"no key 'missing' \(the keys are: id\)"),
        ("{{ item['missing'] }}", r"no key 'missing' \(the keys are: id\)"),
        ("{{ item[0] }}", r"no key 0 \(the keys are: id\)"),
        ("{{ item.id.real.nope }}", "'int object' has no attribute 'nope'"),
        ("{{ nope ~ 'x' }}", "'nope' is undefined"),
        ("{% if nope %}x{% endif %}", "'nope' is undefined"),
        ("{% for x in nope %}{% endfor %}", "'nope' is undefined"),
    ],
)
def test_an_undefined_name_is_an_error_not_an_empty_string(source: str, missing: str) -> None:
    with pytest.raises(UndefinedError, match=missing):
        render_text(source, item={"id": 1})


def test_a_missing_key_of_an_item_names_the_keys_it_has() -> None:
    # items and vars reach templates as read-only mappings, which Jinja would call by their
    # Python type ("'mappingproxy object' has no attribute 'titel'")
    item = MappingProxyType({"id": 1, "title": "t", **{f"k{n}": n for n in range(12)}})
    with pytest.raises(UndefinedError) as caught:
        render_text("{{ item.titel }}", item=item)
    assert str(caught.value) == (
        "no key 'titel' (did you mean 'title'? the keys are: "
        "id, title, k0, k1, k2, k3, k4, k5, k6, k7, ... (14 in all))"
    )
    with pytest.raises(UndefinedError, match=r"no key 'x' \(it is empty\)"):
        render_text("{{ vars.x }}", vars=MappingProxyType({}))


def test_undefined_names_can_still_be_tested_for() -> None:
    assert render_text("{{ nope | default('d') }}{% if nope is defined %}x{% endif %}") == "d"


# --- check(): what validate finds before any render ---------------------------------------------


def test_a_syntax_error_is_found_with_its_line() -> None:
    assert check("Hello\n\n{{ vars.tone }\n", TASK_SCOPE) == [
        TemplateFinding(3, "template syntax error: unexpected '}'")
    ]
    [finding] = check("one\n{% if vars.tone %}\nno end\n", TASK_SCOPE)
    assert finding.message.startswith("template syntax error: ")
    assert "endif" in finding.message


def test_an_undefined_top_level_name_is_found_with_its_line() -> None:
    assert check("a\nb\n{{ colour }} and {{ colour }}\n", TASK_SCOPE) == [
        TemplateFinding(
            3, "undefined template variable 'colour' (available here: outputs, task, vars)"
        )
    ]


def test_names_from_the_wrong_kind_of_task_say_why() -> None:
    assert messages("{{ item.id }}") == [
        "undefined template variable 'item': this task has no for_each"
    ]
    assert messages("{{ iteration }} {{ previous }}") == [
        "undefined template variable 'iteration': this task has no loop",
        "undefined template variable 'previous': this task has no loop",
    ]
    assert messages("{{ item.id }}", ITEM_SCOPE) == []


def test_a_misspelt_top_level_name_gets_a_suggestion() -> None:
    assert messages("{{ var.tone }}") == [
        "undefined template variable 'var' (available here: outputs, task, vars; "
        "did you mean 'vars'?)"
    ]


def test_names_a_template_defines_or_jinja_provides_are_not_findings() -> None:
    source = (
        "{% set greeting = 'hi' %}{{ greeting }}"
        "{% for n in range(3) %}{{ loop.index }}{{ n }}{% endfor %}"
        "{% macro shout(x) %}{{ x | upper }}{% endmacro %}{{ shout(task) }}"
        "{% set ns = namespace(k=1) %}{{ ns.k }}{{ cycler('a', 'b').next() }}"
    )
    assert messages(source) == []


@pytest.mark.parametrize(
    "source", ["{{ vars.tnoe }}", "{{ vars['tnoe'] }}", "{{ vars.tnoe|upper }}"]
)
def test_a_misspelt_var_is_found_with_a_suggestion(source: str) -> None:
    assert check("\n" + source, TASK_SCOPE) == [
        TemplateFinding(
            2,
            "undefined template variable 'vars.tnoe' "
            "(available here: audience, tone; did you mean 'tone'?)",
        )
    ]


def test_an_unknown_var_with_no_close_match_gets_no_suggestion() -> None:
    assert messages("{{ vars.zebra }}") == [
        "undefined template variable 'vars.zebra' (available here: audience, tone)"
    ]


def test_known_vars_and_mapping_methods_are_not_findings() -> None:
    source = (
        "{{ vars.tone }}{{ vars['audience'] }}{{ vars.get('extra', '') }}"
        "{% for k, v in vars.items() %}{{ k }}{% endfor %}{{ vars.keys() | list }}"
    )
    assert messages(source) == []
    # `get` not called is a var lookup like any other
    assert messages("{{ vars.get }}") == [
        "undefined template variable 'vars.get' (available here: audience, tone)"
    ]


def test_outputs_of_tasks_not_in_scope_are_found() -> None:
    assert messages("{{ outputs.summarize[item.id] }}", ITEM_SCOPE) == []
    assert messages("{{ outputs.sumarize }}\n{{ outputs['later'] }}") == [
        "undefined template variable 'outputs.sumarize' "
        "(available here: summarize; did you mean 'summarize'?)",
        "undefined template variable 'outputs.later' (available here: summarize)",
    ]
    first_task = Scope(TASK_SCOPE.names, TASK_SCOPE.vars, frozenset())
    assert messages("{{ outputs.summarize }}", first_task) == [
        "undefined template variable 'outputs.summarize' (available here: none)"
    ]


@pytest.mark.parametrize(
    ("source", "tag"),
    [
        ("intro\n{% include 'other.j2' %}", "include"),
        ("intro\n{% import 'macros.j2' as m %}", "import"),
        ("intro\n{% from 'macros.j2' import m %}", "from"),
        ("intro\n{% extends 'base.j2' %}", "extends"),
    ],
)
def test_loading_another_template_is_found_before_render(source: str, tag: str) -> None:
    assert check(source, TASK_SCOPE) == [
        TemplateFinding(2, f"{{% {tag} %}} is not available: templates cannot read files")
    ]


def test_validate_reports_a_template_typo_at_its_line_in_the_recipe(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "version: 1\n"
        "name: demo\n"
        "vars: {tone: terse}\n"
        "agents: {writer: {provider: echo}}\n"
        "tasks:\n"
        "  - name: summarize\n"
        "    agent: writer\n"
        "    prompt: |\n"
        "      Be {{ vars.tone }}.\n"
        "      Really {{ vars.tnoe }}.\n"
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    [problem] = caught.value.problems
    assert (problem.line, problem.path) == (10, "tasks[0].prompt")
    assert "'vars.tnoe'" in problem.message
    assert "did you mean 'tone'?" in problem.message
