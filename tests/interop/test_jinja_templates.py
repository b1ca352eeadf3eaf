"""fjord's Jinja (runtime/data/jinja.h) against jinja2 as transformers runs it.

Renders every chat template in ../shared/models (chat_template.jinja,
tokenizer_config.json's and chat_template.json's `chat_template`) with
`//runtime/data:jinja_tool` and with transformers' own
`render_jinja_template` over conversations with and without a system message,
multi-turn, add_generation_prompt true and false, Qwen3 reasoning
(`reasoning_content` and `<think>` in content, enable_thinking=False), tool
calls, tool results and a `tools` list, and compares the text byte for byte.
Where transformers raises (Mistral's alternating roles, Gemma's), fjord must
fail with the same message. Also checks a few constructs the real templates
do not use against jinja2 directly, and the message origins that
`--origins` reports.

    bazel build //runtime/data:jinja_tool
    FJORD_BIN_DIR=$PWD/bazel-bin ~/.cache/fjord/venv/bin/python -m pytest -q \
        tests/interop/test_jinja_templates.py
"""

import copy
import json
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TOOL = BIN_DIR / "runtime" / "data" / "jinja_tool"
MODELS = REPO.parent / "shared" / "models"

transformers_utils = pytest.importorskip("transformers.utils.chat_template_utils")


def _templates():
    """(id, template, bos, eos) for every template file in ../shared/models."""
    if not MODELS.is_dir():
        return []
    found = []
    for folder in sorted(p for p in MODELS.iterdir() if p.is_dir()):
        config = {}
        if (folder / "tokenizer_config.json").exists():
            config = json.loads((folder / "tokenizer_config.json").read_text())

        def token(name, default):
            value = config.get(name, default)
            if isinstance(value, dict):
                value = value.get("content", default)
            return value if value is not None else default

        bos, eos = token("bos_token", "<s>"), token("eos_token", "</s>")
        if (folder / "chat_template.jinja").exists():
            found.append((f"{folder.name}/chat_template.jinja",
                          (folder / "chat_template.jinja").read_text(), bos, eos))
        for name in ("tokenizer_config.json", "chat_template.json"):
            path = folder / name
            if not path.exists():
                continue
            template = json.loads(path.read_text()).get("chat_template")
            if isinstance(template, list):
                template = next(t["template"] for t in template if t["name"] == "default")
            if template:
                found.append((f"{folder.name}/{name}", template, bos, eos))
    return found


TEMPLATES = _templates()
# Only the tests of the real templates need ../shared/models.
needs_models = pytest.mark.skipif(
    not TEMPLATES, reason=f"{MODELS} is absent: no real chat templates to render")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city.",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "description": "The city"},
                                      "unit": {"type": "string", "enum": ["c", "f"]}},
                       "required": ["city"]},
    },
}

CONVERSATIONS = {
    "user_assistant": [
        {"role": "user", "content": "Hello there!"},
        {"role": "assistant", "content": "Hi, how are you?"}],
    "system_multi_turn": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 1234 + 5678?"},
        {"role": "assistant", "content": "6912."},
        {"role": "user", "content": "And times two?"},
        {"role": "assistant", "content": "13824"}],
    "ends_with_user": [
        {"role": "user", "content": "  Spaces around, caf\u00e9 \u65e5\u672c \U0001F642\n\n"},
        {"role": "assistant", "content": "\nNoted.\n"},
        {"role": "user", "content": "Quote \" and ' and \\ and {{ braces }} {% tags %}"}],
    "qwen3_thinking": [
        {"role": "user", "content": "Is 7 prime?"},
        {"role": "assistant", "content": "<think>\nDivisors of 7: 1 and 7.\n</think>\n\nYes."},
        {"role": "user", "content": "And 9?"},
        {"role": "assistant", "content": "No, 9 = 3 * 3.",
         "reasoning_content": "3 divides 9."}],
    "tool_calls": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "call12345", "type": "function",
                         "function": {"name": "get_weather",
                                      "arguments": {"city": "Oslo", "unit": "c"}}}]},
        {"role": "tool", "tool_call_id": "call12345", "content": "{\"temp\": -3}"},
        {"role": "assistant", "content": "It is -3 \u00b0C in Oslo."}],
    "alternation_broken": [
        {"role": "user", "content": "One"},
        {"role": "user", "content": "Two"}],
}


def _cases():
    cases = []
    for template_id, template, bos, eos in TEMPLATES:
        for name, messages in CONVERSATIONS.items():
            for generation_prompt in (False, True):
                kwargs = {}
                if name == "tool_calls":
                    kwargs["tools"] = [WEATHER_TOOL]
                cases.append(pytest.param(template, bos, eos, messages, generation_prompt, kwargs,
                                          id=f"{template_id}-{name}-gen{int(generation_prompt)}"))
            if name in ("qwen3_thinking", "user_assistant"):
                cases.append(pytest.param(template, bos, eos, messages, True,
                                          {"enable_thinking": False},
                                          id=f"{template_id}-{name}-nothink"))
    return cases


def _context(messages, generation_prompt, bos, eos, kwargs):
    """The variables transformers' render_jinja_template gives the template."""
    chat = transformers_utils._alias_reasoning_fields(copy.deepcopy(messages))
    context = {"messages": chat, "tools": kwargs.get("tools"), "documents": None,
               "add_generation_prompt": generation_prompt, "bos_token": bos, "eos_token": eos}
    for key, value in kwargs.items():
        if key != "tools":
            context[key] = value
    return context


def _hf_render(template, messages, generation_prompt, bos, eos, kwargs):
    try:
        rendered, _ = transformers_utils.render_jinja_template(
            conversations=[copy.deepcopy(messages)], chat_template=template,
            add_generation_prompt=generation_prompt, bos_token=bos, eos_token=eos, **kwargs)
        return rendered[0], None
    except Exception as error:  # jinja2's TemplateError, UndefinedError, TypeError...
        return None, f"{type(error).__name__}: {error}"


def _fjord_render(tmp_path, template, context, origins=False):
    template_file = tmp_path / "template.jinja"
    context_file = tmp_path / "context.json"
    template_file.write_text(template)
    context_file.write_text(json.dumps(context))
    argv = [str(TOOL), str(template_file), str(context_file)] + (["--origins"] if origins else [])
    return subprocess.run(argv, capture_output=True, check=False)


@pytest.fixture(scope="module", autouse=True)
def _tool_built():
    if not TOOL.exists():
        pytest.fail(f"{TOOL} is missing: bazel build //runtime/data:jinja_tool first")


@needs_models
@pytest.mark.parametrize("template,bos,eos,messages,generation_prompt,kwargs", _cases())
def test_render_matches_transformers(tmp_path, template, bos, eos, messages, generation_prompt,
                                     kwargs):
    expected, error = _hf_render(template, messages, generation_prompt, bos, eos, kwargs)
    context = _context(messages, generation_prompt, bos, eos, kwargs)
    result = _fjord_render(tmp_path, template, context)
    if error is not None:
        assert result.returncode == 1, f"transformers raised {error}, fjord rendered"
        if error.startswith("TemplateError: "):  # raise_exception: the message itself
            message = error[len("TemplateError: "):]
            assert f"raise_exception: {message}" in result.stderr.decode()
        return
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == expected


# Constructs beyond what the shipped templates use, against jinja2 itself.
EXTRA = [
    "{% for k, v in d|dictsort %}{{ k }}={{ v }};{% endfor %}",
    "{{ xs|map(attribute='a')|join(',') }}|{{ xs|selectattr('a', 'gt', 1)|list|length }}",
    "{{ s[::-1] }}|{{ s[1:3] }}|{{ s[-2:] }}|{{ xs[1:] }}|{{ s|length }}|{{ s[0] }}",
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1e20 }} {{ 0.1 + 0.2 }}",
    "{{ [1, 'a', none, true, 1.5] }} {{ {'k': [1, 2]} }} {{ none }} {{ false }}",
    "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ s|tojson }}|{{ 'caf\u00e9'|tojson }}",
    "{% macro m(a, b='x') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(2, b='y') }}",
    "{% set ns = namespace(n=0) %}{% for x in range(10) %}{% if x is odd %}{% continue %}"
    "{% endif %}{% if x > 6 %}{% break %}{% endif %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}",
    "{% for x in [] %}a{% else %}empty{% endfor %}|{% for x in xs if x.a > 1 %}"
    "{{ loop.index }}/{{ loop.length }}{% endfor %}",
    "{{ s.split('l') }} {{ s.split() }} {{ '  a  b '.split() }} {{ s.replace('l', 'L') }}"
    " {{ s.upper() }} {{ s.title() }} {{ s.startswith(('x', 'he')) }}",
    "{{ d.get('a') }} {{ d.get('zz', 5) }} {{ d.items()|list }} {{ d.keys()|list }}",
    "{{ undefined_thing }}|{{ undefined_thing is defined }}|{{ undefined_thing|default('dflt') }}"
    "|{{ '' or 'or' }}|{{ 0 and 1 }}|{{ 'a' if false }}|{{ 'b' ~ 1 ~ none }}",
    "{%- if true -%}\n  x  \n{%- endif -%}\n{% if true %}\n    kept\n{% endif %}\n  {# c #}\n"
    "  {{ 'v' }}\n{%+ if true %}plus{% endif %}\n",
    "{{ 'a\\tb\\n\\u00e9\\x41' }}|{{ \"it's\" }}|{{ 'x' * 3 }}|{{ [1] + [2] }}|{{ 1 < 2 < 3 }}"
    "|{{ 'ab' in 'cabd' }}|{{ 3 not in [1, 2] }}",
    "{{ s|trim('ho') }}|{{ '  x '|trim }}|{{ s|capitalize }}|{{ s|first }}{{ xs|last }}"
    "|{{ '5'|int + 1 }}|{{ 'x'|int }}|{{ 2|string ~ 'a' }}|{{ xs|reverse|list }}",
    "{{ ss|sort|join }}{{ ss|reject('equalto', 'a')|list }}{{ ss|select('ne', 'a')|list }}"
    "{{ (ss + ss)|unique|list }}{{ ss|map('upper')|list }}",
    "{{ '  a\n b'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent(blank=true) }}",
    "{{ s.rsplit('l', 1) }} {{ s.find('l') }} {{ s.count('l') }} {{ '-'.join(ss) }}"
    " {{ s.capitalize() }} {{ 'a b  c'.split(' ') }} {{ 'a b c'.split(none, 1) }}",
    "{{ 1 == 1.0 }} {{ true == 1 }} {{ [1, 2] == [1, 2] }} {{ {'a': 1} == {'a': 1} }}"
    " {{ (1, 2) }}{{ (1,) }}{{ () }}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}{% for x in 'ab' %}"
    "{{ loop.revindex0 }}{{ loop.previtem }}{{ loop.nextitem }}{% endfor %}",
    "{{ xs|tojson(indent=2, sort_keys=true) }}|{{ 1.5|tojson }}|{{ [[], {}]|tojson(indent=1) }}"
    "|{{ {'a': none, 'b': [1, 'x']}|tojson(separators=(',', ':')) }}",
    "{{ -1|abs }}{{ 2.5|int }}{{ '3.7'|float }}{{ '3.7'|int }}{{ 10|float }}{{ -2.5|abs }}",
    "{{ 'abc'[1:] ~ 'abc'[:-1] ~ 'abc'[::2] }}{{ [1, 2, 3][::-1] }}{{ [1, 2, 3][-2:] }}"
    "{{ [1, 2, 3][5:] }}{{ 'abc'[-10:2] }}{{ [1, 2, 3, 4, 5][4:0:-2] }}",
    "{% set x = [] %}{{ x|length }}{{ x|first is undefined }}{{ x is sequence }}",
    "{{ 10 / 4 }} {{ 2 ** -1 }} {{ 7 % -3 }} {{ 1e-7 }} {{ 123456789012345678 }} {{ 1.0e16 }}"
    " {{ 0.0001 }} {{ 1e15 }} {{ -0.0 }} {{ 5 // 2.0 }} {{ 2 * 3.0 }}",
    "{%- set tools = [{'function': {'name': 'a', 'description': 'd', 'return': 'r'}}] %}"
    "{%- for tool in tools %}{%- set tool = tool.function %}{%- for key, val in tool.items() "
    "if key != 'return' %}{{ key }}={{ val }}{% if not loop.last %}, {% endif %}{%- endfor %}"
    "{%- endfor %}",
    "{% macro render(m, prefix='') -%}\n  [{{ prefix }}{{ m }}]\n{%- endmacro %}"
    "{{ render('x') }}{{ render('y', prefix='p:') }}",
    "{% if xs %}\n    a\n    {%- for x in xs %}\n        {{ x.a }}\n    {%- endfor %}\n{% endif %}",
]


@pytest.mark.parametrize("template", EXTRA)
def test_constructs_match_jinja2(tmp_path, template):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    compiled = transformers_utils._compile_jinja_template(template)
    context = {"s": "hello", "d": {"b": 2, "a": 1, "c": "\u00e9\"\n"},
               "xs": [{"a": 1}, {"a": 2}, {"a": 3}], "ss": ["b", "a"]}
    assert isinstance(compiled.environment, ImmutableSandboxedEnvironment)
    expected = compiled.render(**context)
    result = _fjord_render(tmp_path, template, context)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == expected


@needs_models
def test_origins_follow_message_content(tmp_path):
    template = next(t for i, t, _, _ in TEMPLATES if i.startswith("qwen3-0.6b"))
    messages = CONVERSATIONS["qwen3_thinking"]
    context = _context(messages, False, "", "<|im_end|>", {})
    result = _fjord_render(tmp_path, template, context, origins=True)
    assert result.returncode == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    text = out["text"].encode()
    by_message = {}
    for begin, end, message in out["origins"]:
        by_message.setdefault(message, b"")
        by_message[message] += text[begin:end]
    assert by_message[0] == b"Is 7 prime?"
    assert by_message[2] == b"And 9?"
    # The last assistant turn: its reasoning and its answer, both its own.
    assert by_message[3] == b"3 divides 9.No, 9 = 3 * 3."
    # The earlier assistant turn: the template strips its <think> block.
    assert by_message[1] == b"Yes."


def test_syntax_error_names_line_and_column(tmp_path):
    result = _fjord_render(tmp_path, "line one\n{% if x %}\n{{ 1 + }}\n{% endif %}", {})
    assert result.returncode == 1
    assert "line 3, column 8" in result.stderr.decode()


def _random_expression(rng, depth=0):
    atoms = ["1", "0", "-3", "2.5", "1e3", "-0.5", "'ab'", "''", "'a b '", "'A b'", "none",
             "true", "false", "[1, 2]", "[]", "{'k': 1}", "s", "n", "xs", "d", "u",
             "'\\n x\\n'", "(1, 'a')"]
    binops = ["+", "-", "*", "//", "/", "~", "==", "!=", "<", ">=", "and", "or", "in", "not in"]
    filters = ["length", "trim", "upper", "lower", "first", "last", "list", "string", "int",
               "float", "tojson", "default('D')", "join(',')", "reverse|list", "abs",
               "capitalize", "title", "items|list", "count", "unique|list", "sort|list"]
    tests = ["defined", "none", "string", "number", "mapping", "iterable", "sequence", "true",
             "false", "odd", "even", "undefined", "boolean", "integer", "float"]
    methods = ["strip()", "upper()", "split()", "split(',')", "startswith('a')",
               "endswith(' ')", "replace('a', 'X')", "lstrip()", "rstrip('b')", "title()"]
    subscripts = ["0", "-1", "1:", "::-1", ":2", "5", "'k'"]
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice(atoms)
    sub = lambda: _random_expression(rng, depth + 1)  # noqa: E731
    if r < 0.5:
        return f"({sub()} {rng.choice(binops)} {sub()})"
    if r < 0.65:
        return f"({sub()}|{rng.choice(filters)})"
    if r < 0.75:
        return f"({sub()} is {rng.choice(['', 'not '])}{rng.choice(tests)})"
    if r < 0.82:
        return f"({sub()} if {sub()} else {sub()})"
    if r < 0.9:
        return f"{rng.choice(['s', 'xs', 'd'])}[{rng.choice(subscripts)}]"
    if r < 0.95:
        return f"s.{rng.choice(methods)}"
    return f"(not {sub()})"


@pytest.mark.parametrize("seed", range(4))
def test_random_expressions_match_jinja2(tmp_path, seed):
    """Random expressions over literals, operators, filters, tests, methods and
    subscripts: the same text as jinja2, or an error where jinja2 errors."""
    import random
    rng = random.Random(seed)
    context = {"s": "abc, de", "n": 7, "xs": [3, 1, 2], "d": {"k": "v", "a": [1]}}
    mismatches = []
    for _ in range(150):
        template = "{{ " + _random_expression(rng) + " }}"
        try:
            expected, error = transformers_utils._compile_jinja_template(template).render(
                **context), None
        except Exception as e:  # jinja2's UndefinedError, TypeError, ...
            expected, error = None, e
        result = _fjord_render(tmp_path, template, context)
        if error is not None:
            if result.returncode != 1:
                mismatches.append((template, f"jinja2 raised {error!r}", result.stdout))
        elif result.returncode != 0 or result.stdout.decode() != expected:
            mismatches.append((template, expected, result.stdout or result.stderr))
    assert not mismatches, mismatches[:5]
