"""Generates fjord's demo: a tiny Llama-architecture base model in Hugging Face
layout (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)
and a small instruction dataset (train.jsonl, valid.jsonl, heldout.jsonl).

Nothing is downloaded. The base model is pretrained here, on CPU, on plain
statements about countries and their capitals ("Oslo is the capital of
Norway."). The instruction data asks questions in the Llama 3 chat format
("What is the capital of Norway?"). The base model knows the facts but not the
format; a LoRA fine-tune on questions about some countries should answer
questions about held-out countries it has only read statements about.

Usage: make_demo.py OUT_DIR     (writes OUT_DIR/model and OUT_DIR/data)
  FJORD_DEMO_PRETRAIN_STEPS  pretraining steps (default 500; tests use a few)
  FJORD_DEMO_THREADS         torch threads (default 1; the result is the same)

The same bytes on any x86-64 machine for the pinned torch, transformers and
tokenizers (tools/requirements.txt): the data and the tokenizer involve no
floating point, and the model is pretrained with exact_llama.py's arithmetic,
whose result does not depend on the CPU's vector width or the thread count
(ordinary torch training does: the weights, and the fine-tune's result,
differed between machines). tools/demo/check_reproducible.sh checks it.
"""
import json
import os
import random
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM

import exact_llama

CAPITALS = [
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Denmark", "Copenhagen"), ("Finland", "Helsinki"),
    ("Iceland", "Reykjavik"), ("Germany", "Berlin"), ("France", "Paris"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Italy", "Rome"), ("Austria", "Vienna"), ("Switzerland", "Bern"),
    ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"), ("Poland", "Warsaw"),
    ("Czechia", "Prague"), ("Slovakia", "Bratislava"), ("Hungary", "Budapest"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Greece", "Athens"), ("Ireland", "Dublin"),
    ("Estonia", "Tallinn"), ("Latvia", "Riga"), ("Lithuania", "Vilnius"), ("Croatia", "Zagreb"),
    ("Slovenia", "Ljubljana"), ("Serbia", "Belgrade"), ("Albania", "Tirana"), ("Malta", "Valletta"),
    ("Cyprus", "Nicosia"), ("Luxembourg", "Luxembourg"), ("Ukraine", "Kyiv"), ("Moldova", "Chisinau"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Canada", "Ottawa"),
    ("Mexico", "Mexico City"), ("Brazil", "Brasilia"), ("Argentina", "Buenos Aires"),
    ("Australia", "Canberra"), ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Morocco", "Rabat"), ("Ghana", "Accra"),
    ("Nigeria", "Abuja"), ("Ethiopia", "Addis Ababa"), ("Cuba", "Havana"), ("Colombia", "Bogota"),
    ("Nepal", "Kathmandu"), ("Mongolia", "Ulaanbaatar"), ("Georgia", "Tbilisi"),
]

STATEMENTS = [
    "{city} is the capital of {country}.",
    "The capital of {country} is {city}.",
    "{country} has its capital in {city}.",
    "The capital city of {country} is {city}.",
    "People in {country} call {city} their capital.",
    "{city}, the capital of {country}, is a busy city.",
]
# Two-sentence documents that name the same country twice teach the base model
# to copy a name from earlier in its context, which the question->answer
# format needs.
INTROS = [
    "Here is a fact about {country}.", "{country} is a country.", "This is about {country}.",
    "A question about {country} came up.", "Travel guide for {country}.",
]
FILLER = [
    "The weather was cold in the morning.", "Trains leave every hour from the station.",
    "Many people visit the museum on Sundays.", "The river runs through the old town.",
    "Maps show borders, rivers and mountains.", "A city can be large or small.",
    "Every country has a flag and a capital.", "The market opens early on Saturdays.",
]
QUESTIONS = [
    "What is the capital of {country}?",
    "Which city is the capital of {country}?",
    "Name the capital city of {country}.",
    "Tell me the capital of {country}.",
]
ANSWER = "The capital of {country} is {city}."

ROPE_THETA = 10000.0
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
           "<|eot_id|>", "<|pad|>"]
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def corpus(rng):
    lines = []
    for country, city in CAPITALS:
        for t in STATEMENTS:
            lines.append(t.format(country=country, city=city))
            for intro in INTROS:
                lines.append(intro.format(country=country) + " " + t.format(country=country, city=city))
    lines += FILLER
    rng.shuffle(lines)
    return lines


def make_tokenizer(lines):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern=__import__("tokenizers").Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=768, special_tokens=SPECIAL, min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    chat_words = ["user", "assistant", "system", "What", "Which", "Name", "Tell", "capital", "city", "?", "\n\n"]
    tok.train_from_iterator(lines + chat_words * 20 + [q.format(country="X") for q in QUESTIONS] * 20,
                            trainer=trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
        special_tokens=[("<|begin_of_text|>", bos)])
    return tok


def chat_example(country, city, rng):
    q = rng.choice(QUESTIONS).format(country=country)
    return {"messages": [{"role": "user", "content": q},
                         {"role": "assistant", "content": ANSWER.format(country=country, city=city)}]}


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    # Any thread count gives the same bits (exact_llama); one is the fastest on a
    # machine busy with a build (OpenMP threads spin-wait for a core).
    torch.set_num_threads(int(os.environ.get("FJORD_DEMO_THREADS", "1")))
    rng = random.Random(0)
    lines = corpus(rng)
    tok = make_tokenizer(lines)
    model_dir = os.path.join(out, "model")
    data_dir = os.path.join(out, "data")
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(data_dir, exist_ok=True)
    tok.save(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                   "eos_token": "<|eot_id|>", "pad_token": "<|pad|>", "chat_template": CHAT_TEMPLATE,
                   "model_max_length": 256, "clean_up_tokenization_spaces": False}, f, indent=2)

    # Pretrain a tiny Llama on the statements (packed into 64-token rows), with
    # exact_llama's arithmetic: the same weights, bit for bit, on any x86-64 CPU.
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=344,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, rope_theta=ROPE_THETA, tie_word_embeddings=True,
                      bos_token_id=bos, eos_token_id=tok.token_to_id("<|eot_id|>"),
                      pad_token_id=tok.token_to_id("<|pad|>"))
    xcfg = exact_llama.Config(cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
                              cfg.num_attention_heads, cfg.num_key_value_heads, ROPE_THETA, cfg.rms_norm_eps)
    stream = []
    for _ in range(3):
        rng.shuffle(lines)
        for line in lines:
            stream += [bos] + tok.encode(line, add_special_tokens=False).ids + [eos]
    seq = 64
    rows = torch.tensor(stream[: len(stream) // seq * seq]).view(-1, seq)
    params = exact_llama.init_params(xcfg, seed=0)
    rope = exact_llama.rope_tables(seq, xcfg.D, xcfg.theta)
    opt = exact_llama.AdamW(params)
    steps, batch = int(os.environ.get("FJORD_DEMO_PRETRAIN_STEPS", "500")), 32
    batch_rng = random.Random(1)
    for step in range(steps):
        x = rows[[batch_rng.randrange(rows.size(0)) for _ in range(batch)]]
        lr = 3e-3 * min(1.0, (step + 1) / 50) * max(0.05, 1 - step / steps)
        loss, grads = exact_llama.loss_and_grads(xcfg, params, x, rope)
        opt.step(params, grads, lr)
        if step % 100 == 0 or step == steps - 1:
            print(f"pretrain step {step} loss {loss:.4f}", file=sys.stderr)
    model = LlamaForCausalLM(cfg)
    state = {k: v.to(torch.float32) for k, v in params.items()}
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}, result
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.eval()
    model.save_pretrained(model_dir, safe_serialization=True)

    # Instruction data: train on 40 countries, validate on their held-out
    # phrasings, test generalisation on 20 countries never asked about.
    pairs = list(CAPITALS)
    rng.shuffle(pairs)
    train_pairs, heldout_pairs = pairs[:40], pairs[40:]
    train = [chat_example(c, k, rng) for _ in range(6) for c, k in train_pairs]
    rng.shuffle(train)
    valid = [chat_example(c, k, rng) for c, k in heldout_pairs]
    with open(os.path.join(data_dir, "train.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in train)
    with open(os.path.join(data_dir, "valid.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in valid)
    with open(os.path.join(data_dir, "heldout.jsonl"), "w") as f:
        for c, k in heldout_pairs:
            f.write(json.dumps({"prompt": QUESTIONS[0].format(country=c), "answer": k}) + "\n")
    print(f"demo written to {out}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{len(train)} train / {len(valid)} valid examples", file=sys.stderr)


if __name__ == "__main__":
    main()
