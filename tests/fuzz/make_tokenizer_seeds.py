"""Writes the seed corpora of the tokenizer fuzz targets (run from the
repository root with the fjord venv; deterministic):

    ~/.cache/fjord/venv/bin/python tests/fuzz/make_tokenizer_seeds.py

tests/fuzz/tokenizer/*.json: small tokenizer.json files shaped like Llama 3,
Qwen2, GPT-2, Llama 2 (SentencePiece-style, byte fallback) and Metaspace
ones, trained with Hugging Face `tokenizers` on a few hundred corpus lines
(the tokenizer_encode target loads them). tests/fuzz/tokenizer_encode/*:
a knob byte (tokenizer and options) followed by a text.
"""

import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "interop"))
sys.path.insert(0, str(REPO / "tests" / "interop" / "data"))
import make_corpus  # noqa: E402
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, processors, trainers)

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
SP = "\u2581"
CORPUS = make_corpus.corpus(300, 99)


def byte_level(pre, normalizer=None, ignore_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def split_then_bytes(regex):
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                             use_regex=False)])


def llama3():
    tok = byte_level(split_then_bytes(LLAMA3), ignore_merges=True)
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
            ("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    return tok


def qwen2():
    tok = byte_level(split_then_bytes(QWEN2), normalizers.NFC())
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False)])
    return tok


def gpt2():
    tok = byte_level(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True))
    tok.add_special_tokens(["<|endoftext|>", AddedToken("<mask>", lstrip=True, special=True)])
    tok.add_tokens([AddedToken("model", single_word=True), AddedToken(" fjord", rstrip=True)])
    return tok


def sentencepiece(pre, normalizer, decoder):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)])
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, show_progress=False, limit_alphabet=60,
        special_tokens=["<unk>", "<s>", "</s>"]))
    j = json.loads(tok.to_str())
    old = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in old:
        vocab.setdefault(t, len(vocab))
    j["model"]["vocab"] = vocab
    j["normalizer"] = None
    tok = Tokenizer.from_str(json.dumps(j))
    if normalizer is not None:
        tok.normalizer = normalizer
    if pre is not None:
        tok.pre_tokenizer = pre
    tok.decoder = decoder
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def llama2():
    return sentencepiece(
        None, normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)]),
        decoders.Sequence([decoders.Replace(SP, " "), decoders.ByteFallback(), decoders.Fuse(),
                           decoders.Strip(" ", 1, 0)]))


def metaspace():
    return sentencepiece(pre_tokenizers.Metaspace(SP, prepend_scheme="first", split=True), None,
                         decoders.Metaspace(SP, prepend_scheme="first", split=True))


def main():
    out = REPO / "tests" / "fuzz" / "tokenizer"
    out.mkdir(exist_ok=True)
    for name, build in [("llama3", llama3), ("qwen2", qwen2), ("gpt2", gpt2), ("llama2", llama2),
                        ("metaspace", metaspace)]:
        j = json.loads(build().to_str())
        (out / f"{name}.json").write_text(json.dumps(j, ensure_ascii=False, indent=1) + "\n",
                                          encoding="utf-8")
    enc = REPO / "tests" / "fuzz" / "tokenizer_encode"
    enc.mkdir(exist_ok=True)
    texts = ["Hello world! It's <|eot_id|> caf\u00e9 \u4f60\u597d \U0001F642",
             "  \n\n\tx\u00a0y\u3000z <s></s><unk> <0x41> e\u0301 model fjord fjord",
             "def f(x):\n    return x * 2\n  <|im_start|>user\n1234567"]
    for i, text in enumerate(texts):
        for knob in range(5):
            (enc / f"seed-{i}-{knob}").write_bytes(bytes([knob | (8 * i % 32)]) + text.encode())
    (enc / "seed-invalid-utf8").write_bytes(b"\x00a\xff\xfe\xe4\xbd b\xed\xa0\x80 <|eot_id|\xff>")


if __name__ == "__main__":
    main()
