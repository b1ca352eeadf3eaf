"""Generates the tokenizer parity corpus: texts that exercise what tokenizers
get wrong (scripts, normalization, emoji, code, numbers, whitespace runs,
special-token spellings), from a fixed seed, with no downloads.

    python3 tests/interop/data/make_corpus.py > tests/interop/data/tokenizer_corpus.jsonl
    python3 tests/interop/data/make_corpus.py --lines 200000 --seed 7 > /tmp/big.jsonl

Output: JSONL, one JSON string per line (a text may contain newlines).
"""

import argparse
import json
import random
import sys

ENGLISH = ("the of and to in is you that it he was for on are as with his they I at be this have "
           "from or one had by word but not what all were we when your can said there use an each "
           "which she do how their if will up other about out many then them these so some her would "
           "make like him into time has look two more write go see number no way could people my than "
           "first water been call who oil its now find long down day did get come made may part "
           "tokenizer merge vocabulary training gradient adapter checkpoint kernel throughput "
           "model models remodel fjord fjords").split()
CONTRACTIONS = ["don't", "it's", "we're", "they've", "I'm", "you'll", "she'd", "DON'T", "It'S",
                "WE'RE", "I'M", "Y'ALL", "o'clock", "rock'n'roll", "'s", "'t"]
GERMAN = ("Straße Größe Fußgängerübergang Mädchen Bäckerei Übung schön müssen Äpfel Öl "
          "Donaudampfschifffahrtsgesellschaftskapitän Grüße aus München heißt weiß").split()
NORWEGIAN = ("blåbærsyltetøy fjord ærlig øl på gården Tromsø Ålesund kjærlighet søndag "
             "smørbrød hyggelig vær så god").split()
FRENCH = "café naïve résumé Noël façade œuvre déjà vu crème brûlée".split()
CHINESE = ["你好，世界！", "我们正在训练一个分词器。", "中文没有空格分词", "机器学习和深度学习",
           "今天天气很好，我们去公园吧。", "数据集：训练集、验证集、测试集", "“引号”和《书名号》",
           "一二三四五六七八九十", "龍飛鳳舞", "𠀀𠀁𪚥"]
JAPANESE = ["こんにちは世界", "カタカナとひらがな", "東京は日本の首都です。", "ｶﾀｶﾅ半角"]
KOREAN = ["안녕하세요", "한국어 텍스트", "\u1112\u1161\u11ab\u1100\u1173\u11af"]  # last: decomposed jamo
OTHER_SCRIPTS = ["Привет, мир! Ёлка", "Γειά σου Κόσμε ΟΔΟΣ οδός", "مرحبا بالعالم ١٢٣",
                 "नमस्ते दुनिया क्षत्रिय", "สวัสดีชาวโลก", "שלום עולם", "Xin chào thế giới",
                 "İstanbul ıı İi", "ſtraße ﬁne ﬀ", "Kelvin K and Ω ohm Å angstrom"]
EMOJI = ["🙂", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇳🇴🇩🇪🇨🇳", "❤️", "🤖✨", "1️⃣", "🧑🏿‍💻",
         "☕", "🎉🎉🎉", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ℌ𝔢𝔩𝔩𝔬"]
CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "if __name__ == \"__main__\":\n    main()",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "std::vector<int32_t> ids = tok->Encode(text, /*add_special_tokens=*/true);",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "    x = [i**2 for i in range(10) if i % 2 == 0]",
    "#include <iostream>\nint main() { std::cout << \"hi\\n\"; }",
    "$ ls -la /usr/bin | grep -E '^-rwx' && echo ok",
    "<div class=\"a\">Hello&nbsp;&amp;&lt;world&gt;</div>",
    "a+=1;b-=2;c*=3;d/=4;e%=5;f**=6;g//=7",
    "lambda x: x if x else None  # comment",
]
SPECIALS = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "<|", "|>",
            "<0x41>"]
SPACES = [" ", "  ", "   ", "    ", "\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "\u00a0",
          "\u3000", "\u2028", "\u200b", "\u2003", " \t \t"]
COMBINING = ["e\u0301", "a\u0308", "o\u0302\u0323", "n\u0303", "A\u030a", "\u0041\u0300"]


def number(rng):
    kind = rng.randrange(8)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 16)))
    if kind == 1:
        return f"{rng.uniform(-1000, 1000):.{rng.randrange(1, 6)}f}"
    if kind == 2:
        return f"{rng.randrange(1, 10**9):,}"
    if kind == 3:
        return f"{rng.randrange(1900, 2100)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    if kind == 4:
        return f"+47 {rng.randrange(100, 999)} {rng.randrange(10, 99)} {rng.randrange(100, 999)}"
    if kind == 5:
        return f"{rng.randrange(100)}%"
    if kind == 6:
        return f"0x{rng.randrange(1 << 32):08X}"
    return f"{rng.uniform(0, 1):.3e}"


def sentence(rng, words, n):
    out = [rng.choice(words) for _ in range(n)]
    if rng.random() < 0.5:
        out[0] = out[0].capitalize()
    return " ".join(out) + rng.choice([".", "!", "?", ",", ";", ":", "...", ""])


def english(rng):
    words = ENGLISH + CONTRACTIONS * 2
    return sentence(rng, words, rng.randrange(3, 25))


def mixed(rng):
    parts = []
    for _ in range(rng.randrange(2, 9)):
        pick = rng.randrange(11)
        if pick == 0:
            parts.append(english(rng))
        elif pick == 1:
            parts.append(sentence(rng, GERMAN + NORWEGIAN + FRENCH, rng.randrange(1, 6)))
        elif pick == 2:
            parts.append(rng.choice(CHINESE + JAPANESE + KOREAN))
        elif pick == 3:
            parts.append(rng.choice(EMOJI))
        elif pick == 4:
            parts.append(number(rng))
        elif pick == 5:
            parts.append(rng.choice(CODE))
        elif pick == 6:
            parts.append(rng.choice(SPECIALS))
        elif pick == 7:
            parts.append(rng.choice(OTHER_SCRIPTS))
        elif pick == 8:
            parts.append(rng.choice(COMBINING) + rng.choice(ENGLISH))
        elif pick == 9:
            parts.append(rng.choice(SPACES))
        else:
            parts.append(rng.choice(CONTRACTIONS))
    seps = SPACES + [""] * 4 + [" "] * 10
    return "".join(p + rng.choice(seps) for p in parts)


def whitespace(rng):
    parts = []
    for _ in range(rng.randrange(1, 6)):
        parts.append(rng.choice(SPACES) * rng.randrange(1, 5))
        if rng.random() < 0.6:
            parts.append(rng.choice(ENGLISH + NORWEGIAN + CHINESE))
    return "".join(parts)


GENERATORS = [
    (english, 5),
    (lambda r: sentence(r, GERMAN + ENGLISH[:20], r.randrange(3, 15)), 2),
    (lambda r: sentence(r, NORWEGIAN + ENGLISH[:20], r.randrange(3, 15)), 2),
    (lambda r: sentence(r, FRENCH + ENGLISH[:20], r.randrange(3, 12)), 1),
    (lambda r: "".join(r.choice(CHINESE) for _ in range(r.randrange(1, 4))), 2),
    (lambda r: " ".join(r.choice(JAPANESE + KOREAN + OTHER_SCRIPTS) for _ in range(r.randrange(1, 4))), 2),
    (lambda r: "".join(r.choice(EMOJI) + r.choice(["", " "]) for _ in range(r.randrange(1, 6))), 1),
    (lambda r: "\n".join(r.choice(CODE) for _ in range(r.randrange(1, 3))), 2),
    (lambda r: " ".join(number(r) for _ in range(r.randrange(1, 6))), 2),
    (whitespace, 2),
    (mixed, 5),
]


def corpus(lines, seed):
    rng = random.Random(seed)
    total = sum(w for _, w in GENERATORS)
    # Fixed edge cases first.
    out = ["", " ", "  ", "\n", "\n\n\n", "\t\t", "a", "Hello", " Hello", "Hello ", "Hello  world",
           "   leading and trailing   ", "line1\nline2\r\nline3\n", "x\u00a0y\u3000z",
           "<|eot_id|>", "<|begin_of_text|>Hello<|eot_id|>", "<s>Hello</s>", "fake<|eot_id|>x",
           "<|<|eot_id|>|>", "<<s>>", "e\u0301", "\u00e9", "Ǆǅǆ", "ÅÅ", "1234567890" * 3,
           "a" * 300, " " * 300, "\n" * 50 + "x", "🙂" * 40, "你" * 100,
           "word " * 100, "don't won't can't shan't", "DON'T WON'T", "''''''", "'s's's",
           "\u2028\u2029\u0085", "\u200d\u200c\ufeff", "\ud7ff\ue000\uffff", "\U0010ffff",
           "\x00\x01\x1f\x7f", "tab\tseparated\tvalues", "~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./"]
    while len(out) < lines:
        x = rng.randrange(total)
        for gen, weight in GENERATORS:
            if x < weight:
                out.append(gen(rng))
                break
            x -= weight
    return out[:lines]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    for text in corpus(args.lines, args.seed):
        sys.stdout.write(json.dumps(text, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
