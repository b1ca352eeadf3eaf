"""data.chat_template: model (and auto) against transformers' apply_chat_template.

For the models in ../shared/models that ship a tokenizer.json (Qwen3-0.6B,
SmolLM2-135M-Instruct, Mistral-7B-Instruct-v0.1, Phi-3-mini-4k-instruct),
`//runtime/data:validate_tool --template model` must give exactly the ids of
`AutoTokenizer.from_pretrained(folder).apply_chat_template(messages,
tokenize=True)`, except Phi-3: transformers 5 loads its tokenizer as its own
LlamaTokenizer, which writes no "\u2581" before the text after a special token
("<|user|>Hello" -> "Hello"), where tokenizer.json run by the `tokenizers`
library (and fjord's tokenizer, which follows tokenizer.json) writes
"\u2581Hello"; for Phi-3 the reference ids are HF's rendered text encoded by
`tokenizers` from tokenizer.json (the text itself is HF's). None of these
templates has `{% generation %}` markers, so
the trained tokens are compared with this reference: HF's tokens (by their
offsets in HF's rendered text) that overlap an assistant message's rendered
content (for Qwen3's earlier turns: the answer after its stripped <think>
block) extended up to and including the first end-of-turn special token after
it. Bad inputs: a template's raise_exception (Mistral's alternating roles), a
template syntax error, `--template model` for a folder without a template.

    bazel build //runtime/data:validate_tool
    FJORD_BIN_DIR=$PWD/bazel-bin ~/.cache/fjord/venv/bin/python -m pytest -q \
        tests/interop/test_model_chat_template.py
"""

import json
import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TOOL = BIN_DIR / "runtime" / "data" / "validate_tool"
MODELS = REPO.parent / "shared" / "models"
MODEL_NAMES = ["qwen3-0.6b", "smollm2-135m-instruct", "mistral-7b-instruct-v0.1",
               "phi-3-mini-4k-instruct"]
END_OF_TURN = ["<|im_end|>", "<end_of_turn>", "<|end|>", "</s>", "<|eot_id|>", "<|endoftext|>",
               "<|end_of_text|>", "<eos>"]

if not MODELS.is_dir():
    pytestmark = pytest.mark.skip(reason=f"{MODELS} is absent: no model tokenizers to compare")

transformers = pytest.importorskip("transformers")

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"},
     {"role": "assistant", "content": "Hi, how are you?"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "What is 1234 + 5678?"},
     {"role": "assistant", "content": "6912."},
     {"role": "user", "content": "And times two?"},
     {"role": "assistant", "content": "13824, which is 2 x 6912."}],
    [{"role": "user", "content": "Is 7 prime?"},
     {"role": "assistant", "content": "<think>\nDivisors: 1, 7.\n</think>\n\nYes, 7 is prime."},
     {"role": "user", "content": "Caf\u00e9 \u65e5\u672c \U0001F642 and 9?"},
     {"role": "assistant", "content": "No: 9 = 3 x 3.\n\nSo not prime."}],
]


def _run(tokenizer_json, lines, tmp_path, *flags):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "examples.jsonl"
    assert TOOL.exists(), f"{TOOL} is missing: run `bazel build //runtime/data:validate_tool`"
    proc = subprocess.run([str(TOOL), str(tokenizer_json), str(data), "--examples-out", str(out),
                           *flags], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    examples = []
    if proc.returncode == 0:
        examples = [json.loads(line) for line in out.read_text().splitlines()]
    return proc.returncode, report, examples


@pytest.fixture(scope="module", params=MODEL_NAMES)
def model(request):
    folder = MODELS / request.param
    if not (folder / "tokenizer.json").exists():
        pytest.skip(f"{folder}/tokenizer.json is absent")
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    return request.param, folder, hf


def _ids(out):
    return list(out["input_ids"]) if hasattr(out, "keys") else list(out)


def _rendered_content(name, messages, index):
    content = messages[index]["content"]
    later_user = any(m["role"] == "user" for m in messages[index + 1:])
    if name.startswith("qwen3") and "</think>" in content and later_user:
        return content.split("</think>")[-1].lstrip("\n")
    return content


def _reference_mask(name, folder, hf, messages):
    """(ids, 1 for the tokens overlapping assistant content + end of turn)."""
    text = hf.apply_chat_template(messages, tokenize=False)
    specials = set(hf.all_special_tokens) | {t.content for t in hf.added_tokens_decoder.values()
                                             if t.special}
    ends = [e for e in END_OF_TURN if e in specials]
    spans, cursor = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        content = _rendered_content(name, messages, i)
        start = text.index(content, cursor)
        end = start + len(content)
        found = [text.find(e, end) + len(e) for e in ends if text.find(e, end) >= 0]
        if found:
            end = min(found)
        spans.append((start, end))
        cursor = end
    if name.startswith("phi-3"):
        import tokenizers
        raw = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        enc = raw.encode(text, add_special_tokens=False)
        ids, offsets = enc.ids, enc.offsets
    else:
        enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    mask = [int(any(a < e and b > s for s, e in spans)) for a, b in offsets]
    return ids, mask


def test_ids_and_trained_tokens_match_transformers(model, tmp_path):
    name, folder, hf = model
    rc, report, examples = _run(folder / "tokenizer.json",
                                [{"messages": c} for c in CONVERSATIONS], tmp_path,
                                "--template", "model")
    assert rc == 0, report
    assert report["template"] == "model"
    for i, (conv, ex) in enumerate(zip(CONVERSATIONS, examples)):
        expected, mask = _reference_mask(name, folder, hf, conv)
        if not name.startswith("phi-3"):
            assert expected == _ids(hf.apply_chat_template(conv, tokenize=True))
        assert ex["input_ids"] == expected, f"{name} conversation {i}"
        trained = [int(t != -100) for t in ex["targets"][:-1]]
        assert trained == mask[1:], (
            f"{name} conversation {i}: fjord trains {hf.decode([t for t, m in zip(ex['input_ids'][1:], trained) if m])!r}, "
            f"reference {hf.decode([t for t, m in zip(expected[1:], mask[1:]) if m])!r}")


def test_auto_prefers_the_models_template(model, tmp_path):
    name, folder, hf = model
    rc, report, examples = _run(folder / "tokenizer.json", [{"messages": CONVERSATIONS[0]}],
                                tmp_path)
    assert rc == 0, report
    assert report["template"] == "model"
    assert examples[0]["input_ids"] == _reference_mask(name, folder, hf, CONVERSATIONS[0])[0]


def test_weight_zero_turn_is_not_trained(tmp_path):
    folder = MODELS / "smollm2-135m-instruct"
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    conv = [dict(m) for m in CONVERSATIONS[1]]
    conv[2]["weight"] = 0
    rc, report, (ex,) = _run(folder / "tokenizer.json", [{"messages": conv}], tmp_path,
                             "--template", "model")
    assert rc == 0, report
    ids = ex["input_ids"]
    trained = [t for t, target in zip(ids[1:], ex["targets"][:-1]) if target != -100]
    assert hf.decode(trained) == "13824, which is 2 x 6912.<|im_end|>"


def test_template_exception_is_a_line_error(tmp_path):
    folder = MODELS / "mistral-7b-instruct-v0.1"
    bad = [{"role": "user", "content": "One"}, {"role": "user", "content": "Two"},
           {"role": "assistant", "content": "Three"}]
    rc, report, _ = _run(folder / "tokenizer.json", [{"messages": CONVERSATIONS[0]},
                                                     {"messages": bad}], tmp_path,
                         "--template", "model")
    assert rc == 2, report
    (error,) = report["errors"]
    assert error["line"] == 2
    assert "tokenizer_config.json (chat_template): line" in error["message"]
    assert ("raise_exception: After the optional system message, conversation roles must "
            "alternate user/assistant/user/assistant/...") in error["message"]


def test_template_syntax_error_names_file_line_and_column(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(MODELS / "smollm2-135m-instruct" / "tokenizer.json", model_dir)
    (model_dir / "chat_template.jinja").write_text("{% for m in messages %}\n{{ m.content + }}"
                                                   "{% endfor %}")
    rc, report, _ = _run(model_dir / "tokenizer.json", [{"messages": CONVERSATIONS[0]}], tmp_path)
    assert rc == 1
    assert "chat_template.jinja: line 2, column 16" in report["error"]["message"]


def test_model_without_template_is_refused(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(MODELS / "smollm2-135m-instruct" / "tokenizer.json", model_dir)
    rc, report, _ = _run(model_dir / "tokenizer.json", [{"messages": CONVERSATIONS[0]}], tmp_path,
                         "--template", "model")
    assert rc == 1
    message = report["error"]["message"]
    assert "data.chat_template: model, but the model has no chat template" in message
    for looked_at in ("chat_template.jinja", "tokenizer_config.json (chat_template)",
                      "chat_template.json"):
        assert looked_at in message
    # auto falls back to today's choice by special tokens (ChatML for SmolLM2).
    rc, report, _ = _run(model_dir / "tokenizer.json", [{"messages": CONVERSATIONS[0]}], tmp_path)
    assert rc == 0, report
    assert report["template"] == "chatml"


def test_qwen3_reasoning_content_is_rendered_and_trained(tmp_path):
    folder = MODELS / "qwen3-0.6b"
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    conv = [{"role": "user", "content": "Is 9 prime?"},
            {"role": "assistant", "content": "No.", "reasoning_content": "9 = 3 x 3."}]
    rc, report, (ex,) = _run(folder / "tokenizer.json", [{"messages": conv}], tmp_path,
                             "--template", "model")
    assert rc == 0, report
    assert ex["input_ids"] == _ids(hf.apply_chat_template(conv, tokenize=True))
    trained = [t for t, target in zip(ex["input_ids"][1:], ex["targets"][:-1]) if target != -100]
    # From the reasoning through the answer and its end of turn; the template's
    # own "<think>\n" before the reasoning is not the message's text.
    assert hf.decode(trained) == "9 = 3 x 3.\n</think>\n\nNo.<|im_end|>"
    # A built-in template has nowhere to put it.
    rc, report, _ = _run(folder / "tokenizer.json", [{"messages": conv}], tmp_path,
                         "--template", "chatml")
    assert rc == 2
    assert "messages[1].reasoning_content: only the model's own chat template" in (
        report["errors"][0]["message"])


# test_data.py's ChatML template with transformers' {% generation %} markers.
CHATML_GENERATION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}")


def test_generation_markers_give_transformers_assistant_mask(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(MODELS / "smollm2-135m-instruct" / "tokenizer.json", model_dir)
    shutil.copy(MODELS / "smollm2-135m-instruct" / "tokenizer_config.json", model_dir)
    (model_dir / "chat_template.jinja").write_text(CHATML_GENERATION_TEMPLATE)
    hf = transformers.AutoTokenizer.from_pretrained(str(MODELS / "smollm2-135m-instruct"))
    rc, report, examples = _run(model_dir / "tokenizer.json",
                                [{"messages": c} for c in CONVERSATIONS], tmp_path)
    assert rc == 0, report
    for i, (conv, ex) in enumerate(zip(CONVERSATIONS, examples)):
        out = hf.apply_chat_template(conv, chat_template=CHATML_GENERATION_TEMPLATE,
                                     tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
        assert ex["input_ids"] == list(out["input_ids"]), f"conversation {i}"
        trained = [int(t != -100) for t in ex["targets"][:-1]]
        assert trained == list(out["assistant_masks"])[1:], f"conversation {i}"
