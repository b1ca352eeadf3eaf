"""Encode throughput: fjord's tokenizer vs Hugging Face `tokenizers`, single
thread, same corpus, same tokenizer.json.

    bazel build //runtime/tokenizer:tokenizer_tool   # .bazelrc compiles with -O2
    ~/.cache/fjord/venv/bin/python tools/bench/tokenizer_bench.py [--lines 40000] [--repeat 3]

Builds the corpus with tests/interop/data/make_corpus.py (a different seed from
the parity corpus; English, German, Norwegian, Chinese, emoji, code, numbers,
whitespace runs), trains a byte-level BPE on it with HF's BpeTrainer
(vocab_size=32000 asked; the generated corpus has too few distinct words for
more than about 10k tokens, printed in the table) and
saves it as Llama 3 (ignore_merges, its split regex, BOS template), Qwen2 (NFC,
its regex) and Llama 2 (SentencePiece-style: Prepend/Replace normalizer, byte
fallback; a separately trained BPE) tokenizer.json files. Then, for each:
  fjord     tokenizer_tool bench: every line encoded --repeat times after one
            warm-up pass, one thread, in C++.
  hf        tokenizers in this Python, TOKENIZERS_PARALLELISM=false (one
            thread): encode_batch over all lines, encode_batch_fast (no
            offsets), and encode line by line (which includes Python call
            overhead per line); same warm-up and repeats.
Prints a Markdown table (MB/s of UTF-8 input, tokens/s) and checks that both
produce the same number of tokens. Both libraries cache words, so after the
warm-up most words are cache hits in both.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

import tokenizers  # noqa: E402
from tokenizers import (Regex, Tokenizer, decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, processors, trainers)

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TOOL = BIN_DIR / "runtime" / "tokenizer" / "tokenizer_tool"
sys.path.insert(0, str(REPO / "tests" / "interop" / "data"))
import make_corpus  # noqa: E402

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SP = "\u2581"


def byte_level(corpus, regex, ignore_merges, nfc):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=32000, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def llama3(corpus):
    tok = byte_level(corpus, LLAMA3_REGEX, True, False)
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                            "<|end_header_id|>", "<|eot_id|>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    return tok


def qwen2(corpus):
    tok = byte_level(corpus, QWEN2_REGEX, False, True)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return tok


def llama2(corpus):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)])
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=32000, show_progress=False, limit_alphabet=1000,
        special_tokens=["<unk>", "<s>", "</s>"]))
    j = json.loads(tok.to_str())
    old = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in old:
        vocab.setdefault(t, len(vocab))
    j["model"]["vocab"] = vocab
    tok = Tokenizer.from_str(json.dumps(j))
    tok.decoder = decoders.Sequence([decoders.Replace(SP, " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def time_hf(fn, repeat):
    fn()  # warm-up (fills the cache, as for fjord)
    start = time.perf_counter()
    tokens = 0
    for _ in range(repeat):
        tokens += fn()
    return time.perf_counter() - start, tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=40000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    assert TOOL.exists(), f"{TOOL} is missing: bazel build //runtime/tokenizer:tokenizer_tool"
    corpus = make_corpus.corpus(args.lines, args.seed)
    nbytes = sum(len(t.encode("utf-8")) for t in corpus)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        texts = tmp / "corpus.jsonl"
        with open(texts, "w", encoding="utf-8") as f:
            for t in corpus:
                f.write(json.dumps(t, ensure_ascii=False) + "\n")
        for name, build in [("Llama 3 style", llama3), ("Qwen2 style", qwen2),
                            ("Llama 2 style", llama2)]:
            tok = build(corpus)
            path = tmp / "tokenizer.json"
            tok.save(str(path))
            tok = Tokenizer.from_file(str(path))
            out = subprocess.run([str(TOOL), "bench", str(path), str(texts), "--repeat",
                                  str(args.repeat)], capture_output=True, text=True, check=True)
            fj = json.loads(out.stdout)
            batch_s, batch_tokens = time_hf(
                lambda: sum(len(e.ids) for e in tok.encode_batch(corpus, add_special_tokens=False)),
                args.repeat)
            fast_s, fast_tokens = time_hf(
                lambda: sum(len(e.ids) for e in tok.encode_batch_fast(corpus,
                                                                      add_special_tokens=False)),
                args.repeat)
            line_s, line_tokens = time_hf(
                lambda: sum(len(tok.encode(t, add_special_tokens=False).ids) for t in corpus),
                args.repeat)
            assert fj["tokens"] == batch_tokens == fast_tokens == line_tokens, (fj["tokens"],
                                                                               batch_tokens)
            total = nbytes * args.repeat
            results.append({
                "tokenizer": name, "vocab_size": tok.get_vocab_size(),
                "tokens_per_pass": batch_tokens // args.repeat,
                "fjord_mb_s": fj["mb_per_s"], "fjord_tokens_s": fj["tokens_per_s"],
                "hf_batch_mb_s": total / 1e6 / batch_s, "hf_batch_tokens_s": batch_tokens / batch_s,
                "hf_fast_mb_s": total / 1e6 / fast_s, "hf_fast_tokens_s": fast_tokens / fast_s,
                "hf_line_mb_s": total / 1e6 / line_s, "hf_line_tokens_s": line_tokens / line_s,
                "fjord_load_s": fj["load_seconds"]})
    print(f"corpus: {len(corpus)} lines, {nbytes / 1e6:.2f} MB UTF-8 (make_corpus.py --lines "
          f"{args.lines} --seed {args.seed}); {args.repeat} timed passes after one warm-up")
    print(f"tokenizers {tokenizers.__version__}, Python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible")
    print()
    print("| tokenizer | vocab | tokens/pass | fjord MB/s (Mtok/s) | HF encode_batch MB/s (Mtok/s) | "
          "HF encode_batch_fast MB/s (Mtok/s) | HF encode per line MB/s (Mtok/s) | "
          "fjord / best HF |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        best = max(r["hf_batch_mb_s"], r["hf_fast_mb_s"], r["hf_line_mb_s"])
        print(f"| {r['tokenizer']} | {r['vocab_size']} | {r['tokens_per_pass']} | {r['fjord_mb_s']:.1f} "
              f"({r['fjord_tokens_s'] / 1e6:.2f}) | {r['hf_batch_mb_s']:.1f} "
              f"({r['hf_batch_tokens_s'] / 1e6:.2f}) | {r['hf_fast_mb_s']:.1f} "
              f"({r['hf_fast_tokens_s'] / 1e6:.2f}) | {r['hf_line_mb_s']:.1f} "
              f"({r['hf_line_tokens_s'] / 1e6:.2f}) | {r['fjord_mb_s'] / best:.1f}x |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
