"""runtime/tokenizer against Hugging Face `tokenizers`: ids must be EXACTLY equal.

Builds tokenizers of each style fjord supports with the `tokenizers` library
itself (BpeTrainer on the parity corpus, then the normalizer, pre-tokenizer,
decoder, post-processor and special tokens those models ship), saves each as
tokenizer.json, and checks `//runtime/tokenizer:tokenizer_tool` against HF on
tests/interop/data/tokenizer_corpus.jsonl (2,500 lines: English, German,
Norwegian, Chinese, other scripts, emoji, code, numbers, whitespace runs,
special-token spellings; regenerate with data/make_corpus.py):
  - encode with and without add_special_tokens, and with special-token
    matching off (HF encode_special_tokens / transformers split_special_tokens);
  - decode (with and without skip_special_tokens) equal to HF's decode, and
    decode(encode(x)) == x where the tokenizer is lossless;
  - invalid UTF-8 encodes as HF encodes the text decoded with errors="replace";
  - every code point of Unicode 14 splits and normalizes as in HF;
  - malformed tokenizer.json files are refused with the field named.

    bazel build //runtime/tokenizer:tokenizer_tool
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_tokenizer.py
"""

import json
import os
import pathlib
import subprocess
import sys
import unicodedata

import pytest
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TOOL = BIN_DIR / "runtime" / "tokenizer" / "tokenizer_tool"
CORPUS_PATH = REPO / "tests" / "interop" / "data" / "tokenizer_corpus.jsonl"

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SP = "\u2581"  # SentencePiece's "▁"

LLAMA3_SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>"]
                   + [f"<|reserved_special_token_{i}|>" for i in range(4)]
                   + ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])


def load_corpus():
    with open(CORPUS_PATH, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


CORPUS = load_corpus()


def byte_level_bpe(pre_tokenizer, normalizer=None, vocab_size=3000, ignore_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def llama3():
    tok = byte_level_bpe(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ]), ignore_merges=True)
    tok.add_special_tokens(LLAMA3_SPECIALS)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A:0 <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return json.loads(tok.to_str())


def llama3_string_merges():
    """Llama 3 as Meta shipped it: merges as "a b" strings."""
    j = llama3()
    j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    assert all(isinstance(m, str) and m.count(" ") == 1 for m in j["model"]["merges"])
    return j


def qwen2():
    tok = byte_level_bpe(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ]), normalizer=normalizers.NFC())
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    # Qwen2.5 adds non-special tokens too (normalized, matched on NFC text).
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                    AddedToken("</tool_call>", special=False, normalized=False),
                    AddedToken("caf\u00e9 ol\u00e9", special=False, normalized=True)])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                              use_regex=False)
    return json.loads(tok.to_str())


def gpt2():
    tok = byte_level_bpe(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
                         vocab_size=2000)
    tok.add_special_tokens(["<|endoftext|>"])
    tok.add_tokens([AddedToken(" fjord", lstrip=False, rstrip=True, normalized=False),
                    AddedToken("model", single_word=True, normalized=False),
                    AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    return json.loads(tok.to_str())


def sentencepiece_model():
    """A Llama 2-style BPE: <unk> <s> </s>, the 256 <0xNN> byte tokens, then
    merges trained on SentencePiece-normalized lines (a small alphabet, so
    rare characters go through byte fallback)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)])
    trainer = trainers.BpeTrainer(vocab_size=2500, show_progress=False, limit_alphabet=150,
                                  special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    old = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for token, _ in old:
        if token not in vocab:
            vocab[token] = len(vocab)
    model["vocab"] = vocab
    return model


SENTENCEPIECE_MODEL = None


def llama2_document(normalizer, pre_tokenizer, decoder, added_normalized=False):
    global SENTENCEPIECE_MODEL
    if SENTENCEPIECE_MODEL is None:
        SENTENCEPIECE_MODEL = sentencepiece_model()
    tok = Tokenizer.from_str(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
        "model": SENTENCEPIECE_MODEL}))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=added_normalized)
                            for t in ["<unk>", "<s>", "</s>"]])
    if normalizer is not None:
        tok.normalizer = normalizer
    if pre_tokenizer is not None:
        tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoder
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return json.loads(tok.to_str())


LLAMA2_DECODER = decoders.Sequence([decoders.Replace(SP, " "), decoders.ByteFallback(),
                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)])


def llama2_legacy():
    return llama2_document(
        normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)]), None,
        LLAMA2_DECODER)


def llama2_legacy_normalized_specials():
    """Specials with normalized=true: HF matches them as normalized ("▁<s>")."""
    return llama2_document(
        normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)]), None,
        LLAMA2_DECODER, added_normalized=True)


def llama2_metaspace():
    """transformers' newer Llama conversion: Metaspace, prepend only first."""
    return llama2_document(None, pre_tokenizers.Metaspace(SP, prepend_scheme="first", split=False),
                           LLAMA2_DECODER)


def metaspace_split_always():
    return llama2_document(None, pre_tokenizers.Metaspace(SP, prepend_scheme="always", split=True),
                           decoders.Metaspace(SP, prepend_scheme="always", split=True))


BUILDERS = {
    "llama3": llama3,
    "llama3_string_merges": llama3_string_merges,
    "qwen2": qwen2,
    "gpt2": gpt2,
    "llama2_legacy": llama2_legacy,
    "llama2_legacy_normalized_specials": llama2_legacy_normalized_specials,
    "llama2_metaspace": llama2_metaspace,
    "metaspace_split_always": metaspace_split_always,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    assert TOOL.exists(), f"{TOOL} is missing: run `bazel build //runtime/tokenizer:tokenizer_tool`"
    out = {}
    root = tmp_path_factory.mktemp("tokenizers")
    for name, build in BUILDERS.items():
        path = root / f"{name}.json"
        path.write_text(json.dumps(build(), ensure_ascii=False), encoding="utf-8")
        out[name] = (path, Tokenizer.from_file(str(path)))
    return out


def write_texts(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            if isinstance(t, bytes):
                f.write(json.dumps({"hex": t.hex()}) + "\n")
            else:
                f.write(json.dumps(t, ensure_ascii=False) + "\n")


def tool(*args):
    proc = subprocess.run([str(TOOL), *map(str, args)], capture_output=True, timeout=300)
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


def fjord_encode(path, texts, tmp_path, *flags):
    inp = tmp_path / "texts.jsonl"
    write_texts(inp, texts)
    rc, out, err = tool("encode", path, inp, *flags)
    assert rc == 0, err
    ids = [json.loads(line) for line in out.split("\n") if line]
    assert len(ids) == len(texts)
    return ids


def fjord_decode(path, id_lists, tmp_path, *flags):
    inp = tmp_path / "ids.jsonl"
    with open(inp, "w") as f:
        for ids in id_lists:
            f.write(json.dumps(ids) + "\n")
    rc, out, err = tool("decode", path, inp, *flags)
    assert rc == 0, err
    texts = [json.loads(line) for line in out.split("\n") if line]
    assert len(texts) == len(id_lists)
    return texts


def assert_same(texts, ours, theirs, what):
    bad = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    def short(x):
        x = repr(x)
        return x if len(x) < 300 else x[:300] + "..."
    detail = "\n".join(f"  line {i + 1} {short(texts[i])}:\n    fjord {short(ours[i])}\n"
                       f"    hf    {short(theirs[i])}" for i in bad[:5])
    assert not bad, f"{what}: {len(bad)} of {len(texts)} differ\n{detail}"


def test_corpus_is_big_and_varied():
    assert len(CORPUS) >= 2000
    joined = "".join(CORPUS)
    for probe in ["ø", "ß", "你", "🙂", "def ", "  ", "\n\n", "<|eot_id|>", "1234"]:
        assert probe in joined, probe


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_encode_matches_hf(name, add_special_tokens, built, tmp_path):
    path, hf = built[name]
    flags = ["--add-special-tokens"] if add_special_tokens else []
    ours = fjord_encode(path, CORPUS, tmp_path, *flags)
    theirs = [e.ids for e in hf.encode_batch(CORPUS, add_special_tokens=add_special_tokens)]
    assert_same(CORPUS, ours, theirs, f"{name} encode(add_special_tokens={add_special_tokens})")
    assert sum(map(len, ours)) > len(CORPUS)  # it really tokenized something


@pytest.mark.parametrize("name", ["llama3", "qwen2", "gpt2", "llama2_legacy", "llama2_metaspace"])
def test_split_special_tokens_matches_hf(name, built, tmp_path):
    path, _ = built[name]
    hf = Tokenizer.from_file(str(path))
    hf.encode_special_tokens = True
    ours = fjord_encode(path, CORPUS, tmp_path, "--split-special-tokens")
    theirs = [e.ids for e in hf.encode_batch(CORPUS, add_special_tokens=False)]
    assert_same(CORPUS, ours, theirs, f"{name} split_special_tokens")
    # Specials outside the model's vocabulary can only come from matching, so
    # they never appear. (In the SentencePiece-style ones, trained merges can
    # build "</s>", which is also vocabulary id 2: HF emits it, and so does
    # fjord.)
    if not name.startswith("llama2"):
        specials = set(json.loads(tool("info", path)[1])["special_ids"])
        assert specials and not any(i in specials for ids in ours for i in ids)


def test_split_special_tokens_equals_transformers(built, tmp_path):
    from transformers import PreTrainedTokenizerFast
    path, _ = built["llama3"]
    hf = PreTrainedTokenizerFast(tokenizer_file=str(path), split_special_tokens=True)
    texts = [t for t in CORPUS if "<|" in t][:200]
    assert len(texts) > 20
    ours = fjord_encode(path, texts, tmp_path, "--split-special-tokens")
    theirs = [hf.encode(t, add_special_tokens=False) for t in texts]
    assert_same(texts, ours, theirs, "transformers split_special_tokens=True")


def has_added_spelling(text, j):
    return any(t["content"] in text or t["content"].strip() in text for t in j["added_tokens"])


@pytest.mark.parametrize("name", list(BUILDERS))
def test_decode_matches_hf_and_round_trips(name, built, tmp_path):
    path, hf = built[name]
    j = json.loads(path.read_text(encoding="utf-8"))
    ids = fjord_encode(path, CORPUS, tmp_path, "--add-special-tokens")
    for skip in [False, True]:
        flags = ["--skip-special-tokens"] if skip else []
        ours = fjord_decode(path, ids, tmp_path, *flags)
        theirs = hf.decode_batch(ids, skip_special_tokens=skip)
        assert_same(CORPUS, ours, theirs, f"{name} decode(skip_special_tokens={skip})")
    # Lossless where the tokenizer is: byte-level without a prefix space
    # (Qwen2 up to NFC), SentencePiece-style on text between added tokens.
    decoded = fjord_decode(path, fjord_encode(path, CORPUS, tmp_path), tmp_path)
    if name == "gpt2" or name == "metaspace_split_always":
        return  # add_prefix_space / prepend "always": a space is added per piece
    for text, back in zip(CORPUS, decoded):
        if name.startswith("llama2") and (has_added_spelling(text, j) or "<0x" in text):
            continue  # added tokens and <0xNN> spellings (merged into byte tokens)
        if name == "llama2_metaspace" and text.startswith(" "):
            continue  # prepend_scheme "first" adds no "▁" there; the decoder strips one
        expected = unicodedata.normalize("NFC", text) if name == "qwen2" else text
        assert back == expected, f"{name}: {text!r} decoded as {back!r}"


INVALID_UTF8 = [b"\xff", b"a\xffb", b"\xc3", b"caf\xc3", b"\xe4\xbd", b"\xe4\xbdx\xa0",
                b"\xed\xa0\x80", b"\xf0\x9f\x99", b"\xf0\x9f\x99\x82\x82", b"\xc0\xaf",
                b"\xf5\x80\x80\x80", b"ok \x80\x80\x80 ok", b"<|eot_id|\xff>",
                b"\xf4\x90\x80\x80", b"\xe0\x80\xaf", b"Hello\xfeWorld\xff\xfe"]


@pytest.mark.parametrize("name", ["llama3", "qwen2", "llama2_legacy"])
def test_invalid_utf8_encodes_as_replacement_characters(name, built, tmp_path):
    path, hf = built[name]
    ours = fjord_encode(path, INVALID_UTF8, tmp_path)
    theirs = [hf.encode(b.decode("utf-8", errors="replace"), add_special_tokens=False).ids
              for b in INVALID_UTF8]
    assert_same(INVALID_UTF8, ours, theirs, f"{name} invalid UTF-8")


def every_code_point_lines(width=500):
    """Every code point but the surrogates, assigned or not (so Unicode
    versions show), in lines."""
    text = "".join(chr(c) for c in range(0x20, 0x110000) if not 0xD800 <= c < 0xE000)
    return [text[i:i + width] for i in range(0, len(text), width)]


def normalization_lines():
    """Code points normalization cares about (marks, decomposable or
    composable characters, Hangul jamo) between letters and before combining
    marks of two classes; plus every 50th other assigned code point."""
    out, picked = [], []
    for i, c in enumerate(range(0x80, 0x110000)):
        if 0xD800 <= c < 0xE000:
            continue
        ch = chr(c)
        cat = unicodedata.category(ch)
        if cat == "Cn":
            continue
        if (cat.startswith("M") or unicodedata.decomposition(ch) or 0x1100 <= c < 0x1200
                or unicodedata.combining(ch) or i % 50 == 0):
            picked.append(ch)
    for i in range(0, len(picked), 40):
        out.append("".join(f"a{ch} 1{ch}\u0301\u0323 e{ch}\u0308" for ch in picked[i:i + 40]))
    return out


NORMALIZATION_LINES = normalization_lines()


@pytest.fixture(scope="module")
def code_point_lines():
    return every_code_point_lines()


@pytest.fixture(scope="module")
def mixed_lines():
    return every_code_point_lines() + NORMALIZATION_LINES


@pytest.mark.parametrize("name", ["llama3", "qwen2", "gpt2"])
def test_every_code_point_splits_and_normalizes_as_hf(name, built, mixed_lines, tmp_path):
    path, hf = built[name]
    ours = fjord_encode(path, mixed_lines, tmp_path)
    theirs = [e.ids for e in hf.encode_batch(mixed_lines, add_special_tokens=False)]
    assert_same(mixed_lines, ours, theirs, f"{name} all code points")


@pytest.mark.parametrize("form", ["NFC", "NFD", "NFKC", "NFKD"])
def test_every_code_point_normalizes_as_hf(form, tmp_path):
    """Each normal form as the only component: a byte-level BPE without
    merges, so the ids are the normalized bytes."""
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(
        sorted(pre_tokenizers.ByteLevel.alphabet()))}, merges=[]))
    tok.normalizer = getattr(normalizers, form)()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    path = tmp_path / "norm.json"
    tok.save(str(path))
    lines = NORMALIZATION_LINES
    ours = fjord_encode(path, lines, tmp_path)
    theirs = [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]
    assert_same(lines, ours, theirs, f"{form} all code points")


REGEX_CLASSES = [r"\p{L}+|\p{N}|[\p{P}\p{S}]+|\h+", r"\p{Lu}|\p{Ll}+|\p{Lo}\p{M}*|\S+",
                 r"\w+|\s+|[^\s\p{L}\p{N}]+", r"\W+|\d+|[\w\s]+|[^\W\d]",
                 r"\p{Mn}+|\P{L}+|\p{^N}+|(?i:straße|ǅ|k)|^\p{Z}|\p{Z}$"]


@pytest.mark.parametrize("pattern", REGEX_CLASSES)
def test_every_code_point_matches_regex_classes_as_hf(pattern, code_point_lines, tmp_path):
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(
        sorted(pre_tokenizers.ByteLevel.alphabet()))}, merges=[], ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)])
    path = tmp_path / "re.json"
    tok.save(str(path))
    ours = fjord_encode(path, code_point_lines, tmp_path)
    theirs = [e.ids for e in tok.encode_batch(code_point_lines, add_special_tokens=False)]
    assert_same(code_point_lines, ours, theirs, f"{pattern} all code points")


@pytest.mark.parametrize("name", list(BUILDERS))
def test_vocab_size_and_specials(name, built):
    path, hf = built[name]
    rc, out, err = tool("info", path)
    assert rc == 0, err
    info = json.loads(out)
    assert info["vocab_size"] == hf.get_vocab_size(with_added_tokens=True)
    special = sorted(i for i, t in hf.get_added_tokens_decoder().items() if t.special)
    assert info["special_ids"] == special
    expected_bos = {"llama3": "<|begin_of_text|>", "llama3_string_merges": "<|begin_of_text|>",
                    "qwen2": None, "gpt2": None}.get(name, "<s>")
    assert info["bos_id"] == (hf.token_to_id(expected_bos) if expected_bos else None)


def mutate(j, dotted, value):
    node = j
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return j


MALFORMED = [
    ("model.type", "Unigram", "model.type: unsupported model \"Unigram\""),
    ("pre_tokenizer.pretokenizers.0.pattern", {"Regex": "(?<=x"},
     "pre_tokenizer.pretokenizers[0].pattern.Regex: invalid regex"),
    ("pre_tokenizer.pretokenizers.1.type", "Punctuation",
     "pre_tokenizer.pretokenizers[1].type: unsupported pre_tokenizer \"Punctuation\""),
    ("normalizer", {"type": "BertNormalizer"}, "normalizer.type: unsupported normalizer"),
    ("decoder", {"type": "CTC"}, "decoder.type: unsupported decoder \"CTC\""),
    ("model.merges.0", "\u0120 \u0120\u0120\u0120zzz", "model.merges[0]: "),
    ("added_tokens.1.id", 5, "added_tokens[1].id: 5 for \"<|end_of_text|>\""),
    ("model.ignore_merges", "true", "model.ignore_merges: expected a boolean, got string"),
]


@pytest.mark.parametrize("field,value,message", MALFORMED)
def test_malformed_tokenizer_json_is_refused(field, value, message, built, tmp_path):
    path, _ = built["llama3"]
    j = mutate(json.loads(path.read_text(encoding="utf-8")), field, value)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(j), encoding="utf-8")
    rc, out, err = tool("info", bad)
    assert rc == 1
    error = json.loads(out)["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["message"].startswith(f"{bad}: "), error["message"]
    assert message in error["message"], error["message"]


def test_not_json_and_not_utf8(tmp_path):
    for name, data, message in [("trunc.json", b'{"model": {', "not valid JSON"),
                                ("latin1.json", b'{"version": "1.0\xe9"}', "not valid UTF-8")]:
        bad = tmp_path / name
        bad.write_bytes(data)
        rc, out, _ = tool("info", bad)
        assert rc == 1 and message in json.loads(out)["error"]["message"]
    rc, out, _ = tool("info", tmp_path / "missing.json")
    assert rc == 1 and json.loads(out)["error"]["code"] == "NOT_FOUND"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
