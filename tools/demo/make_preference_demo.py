"""Derives the demo's preference set from its instruction data (make_demo.py):
each question about a country's capital becomes a pair whose chosen answer
names the right capital and whose rejected answer names another country's
("The capital of Norway is Oslo." over "The capital of Norway is Lisbon.").
The pairs of train.jsonl train; those of valid.jsonl, about the 20 countries
never asked about in training, are the held-out pairs on which DPO must raise
the reward accuracy (tests/interop/test_fjord_train_preference.py).

Usage: make_preference_demo.py DATA_DIR OUT_DIR   (deterministic, no floating point)
"""
import json
import re
import sys

ANSWER = re.compile(r"^The capital of (.+) is (.+)\.$")


def pairs(path, cities):
    out = []
    with open(path) as f:
        for i, line in enumerate(f):
            messages = json.loads(line)["messages"]
            country, city = ANSWER.match(messages[-1]["content"]).groups()
            wrong = cities[(cities.index(city) + 1 + i % (len(cities) - 1)) % len(cities)]
            out.append({"prompt": messages[:-1],
                        "chosen": [{"role": "assistant", "content": f"The capital of {country} is {city}."}],
                        "rejected": [{"role": "assistant", "content": f"The capital of {country} is {wrong}."}]})
    return out


def main():
    data_dir, out_dir = sys.argv[1], sys.argv[2]
    for name in ["train.jsonl", "valid.jsonl"]:
        # The wrong answers of a file are capitals of that file's countries only: the held-out
        # capitals never appear in training, as chosen or rejected.
        with open(f"{data_dir}/{name}") as f:
            cities = sorted({ANSWER.match(json.loads(line)["messages"][-1]["content"]).group(2) for line in f})
        with open(f"{out_dir}/{name}", "w") as f:
            f.writelines(json.dumps(p) + "\n" for p in pairs(f"{data_dir}/{name}", cities))


if __name__ == "__main__":
    main()
