"""Benchmarks: task formats on the real data files, log-likelihood scoring, metrics, bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ablab.config import ModelConfig, OptimConfig
from ablab.data.tokenizer import CharTokenizer
from ablab.errors import UserError
from ablab.evals import TASKS, TaskSpec, evaluate_task, fewshot_contexts, load_examples, loglikelihood
from ablab.model.gpt import GPT
from ablab.model.optim import build_optimizer

ALPHABET = "abcdefghijklmnopqrstuvwxyz :?\n"


def tiny_gpt(vocab_size: int, seq_len: int = 32, init_std: float = 0.02, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, init_std=init_std)
    return GPT(cfg, vocab_size, seq_len)


def jsonl_task(path: Path, rows: list[dict], name: str = "toy") -> TaskSpec:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return TaskSpec.from_jsonl(name, path, "question", "options", "answer")


# --- built-in tasks on the real files -------------------------------------------------------------

FIRST_EXAMPLES = {
    # lm-eval hellaswag: activity_label + ": " + ctx_a + " " + ctx_b.capitalize(); ctx_b here is "he".
    "hellaswag": ("Roof shingle removal: A man is sitting on a roof. He",
                  [" is using wrap to wrap a pair of skis.", " is ripping level tiles off.",
                   " is holding a rubik's cube.", " starts pulling up roofing on a roof."], 3),
    "piqa": ("Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
             [" Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, "
              "you will also need to supply it with a water bottle and a food dish.",
              " Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, "
              "you will also need to supply it with a water bottle and a food dish."], 0),
    # The .lst label is 3 (1-based), so gold is answerC.
    "siqa": ("Q: Tracy didn't go home that evening and resisted Riley's attacks. "
             "What does Tracy need to do before this?\nA:",
             [" make a new plan", " Go home and see Riley", " Find somewhere to go"], 2),
    "arc_easy": ("Question: Which statement best explains why photosynthesis is the foundation of most food webs?"
                 "\nAnswer:",
                 [" Sunlight is the source of energy for nearly all ecosystems.",
                  " Most ecosystems are found on land instead of in water.",
                  " Carbon dioxide is more available than other gases.",
                  " The producers in all ecosystems are plants."], 0),
}


@pytest.mark.parametrize("name", sorted(FIRST_EXAMPLES))
def test_multiple_choice_tasks_format_like_the_harness(shared_data, name):
    examples = load_examples(TASKS[name])
    context, continuations, gold = FIRST_EXAMPLES[name]
    first = examples[0]
    assert (first.context, list(first.continuations), first.gold) == (context, continuations, gold)
    assert all(0 <= ex.gold < len(ex.continuations) for ex in examples)
    assert all(c.startswith(" ") and c[1:] == raw for ex in examples for c, raw in zip(ex.continuations, ex.choices))


def test_chance_levels_are_computed_from_the_data(shared_data):
    def chance(name: str) -> float:
        examples = load_examples(TASKS[name])
        return sum(1 / len(ex.choices) for ex in examples) / len(examples)
    assert chance("hellaswag") == pytest.approx(0.25)
    assert chance("piqa") == pytest.approx(0.5)
    assert chance("siqa") == pytest.approx(1 / 3)
    # ARC-Easy test: 2,365 questions with 4 choices, 7 with 3, 4 with 5.
    assert chance("arc_easy") == pytest.approx((2365 / 4 + 7 / 3 + 4 / 5) / 2376)


@pytest.mark.parametrize("name", ["hellaswag", "piqa", "siqa", "arc_easy"])
def test_random_choice_scores_land_within_three_standard_errors_of_chance(shared_data, name):
    from ablab.evals.scoring import _multiple_choice_metrics

    examples = load_examples(TASKS[name], limit=1000, seed=1)
    rng = random.Random(0)
    metrics = _multiple_choice_metrics(examples, [rng.random() for ex in examples for _ in ex.choices])
    assert abs(metrics["acc"] - metrics["chance"]) < 3 * metrics["acc_stderr"]
    assert metrics["acc_stderr"] == pytest.approx(math.sqrt(metrics["acc"] * (1 - metrics["acc"]) / 999))
    assert abs(metrics["centered"]) < 3 * metrics["centered_stderr"]


def test_hellaswag_labels_match_the_source_counts(shared_data):
    counts = [0, 0, 0, 0]
    for ex in load_examples(TASKS["hellaswag"]):
        counts[ex.gold] += 1
    assert counts == [2515, 2485, 2584, 2458]


def test_lambada_splits_off_the_last_word(shared_data):
    examples = load_examples(TASKS["lambada"])
    assert len(examples) == 5153
    first = examples[0]
    assert first.context.startswith("In my palm is a clear stone, and inside it is a small ivory statuette.")
    assert first.context.endswith("his mouth curved in a confident grin, I don't care about")
    assert first.continuations == (" signs",) and first.gold == 0


def test_limit_draws_a_seeded_subset_in_file_order(shared_data):
    a = load_examples(TASKS["piqa"], limit=20, seed=1)
    assert a == load_examples(TASKS["piqa"], limit=20, seed=1)
    assert a != load_examples(TASKS["piqa"], limit=20, seed=2)
    full = load_examples(TASKS["piqa"])
    positions = [full.index(ex) for ex in a]
    assert positions == sorted(positions) and len(a) == 20


# --- log-likelihood -------------------------------------------------------------------------------

def by_hand(model: GPT, ids: list[int], n_cont: int) -> tuple[float, bool]:
    with torch.no_grad():
        logprobs = F.log_softmax(model(torch.tensor([ids[:-1]]))[0].float(), dim=-1)
    rows, target = logprobs[-n_cont:], torch.tensor(ids[-n_cont:])
    return rows.gather(1, target[:, None]).sum().item(), bool((rows.argmax(-1) == target).all())


def test_loglikelihood_is_the_sum_of_log_softmax_over_the_continuation():
    tok = CharTokenizer(ALPHABET)
    model = tiny_gpt(tok.vocab_size, init_std=0.3)
    (score, greedy), = loglikelihood(model, tok, [("the cat sat on", " the mat")])
    expected, expected_greedy = by_hand(model, tok.encode("the cat sat on the mat"), len(" the mat"))
    assert score == pytest.approx(expected, abs=1e-5)
    assert greedy == expected_greedy
    assert score < 0


def test_long_context_is_left_truncated_and_the_continuation_kept():
    tok = CharTokenizer(ALPHABET)
    model = tiny_gpt(tok.vocab_size, seq_len=16, init_std=0.3)
    context = "a very long context that cannot fit in sixteen tokens at all"
    (score, _), = loglikelihood(model, tok, [(context, " ending")])
    ids = tok.encode(context + " ending")[-17:]
    assert score == pytest.approx(by_hand(model, ids, len(" ending"))[0], abs=1e-5)


def test_a_continuation_longer_than_seq_len_is_scored_whole_in_pieces():
    tok = CharTokenizer(ALPHABET)
    model = tiny_gpt(tok.vocab_size, seq_len=16, init_std=0.3)
    context, continuation = "a cat", " sat on the quiet mat by the river"  # 34 tokens: three pieces
    (score, greedy), = loglikelihood(model, tok, [(context, continuation)])
    ids = tok.encode(context + continuation)
    # Each continuation token scored once, with at most 16 tokens of left context: pieces end at
    # the last 16, then the 16 before, then the first 2 continuation tokens.
    expected, all_greedy, end, left = 0.0, True, len(ids), len(continuation)
    while left:
        n = min(left, 16)
        part, part_greedy = by_hand(model, ids[max(0, end - 17) : end], n)
        expected, all_greedy = expected + part, all_greedy and part_greedy
        end, left = end - n, left - n
    assert score == pytest.approx(expected, abs=1e-4) and greedy == all_greedy
    whole_context = by_hand(tiny_gpt(tok.vocab_size, seq_len=64, init_std=0.3), ids, len(continuation))[0]
    assert score != pytest.approx(whole_context, abs=1e-3)  # the window really is shorter than the text


def test_batched_scores_equal_unbatched():
    tok = CharTokenizer(ALPHABET)
    model = tiny_gpt(tok.vocab_size, init_std=0.3)
    rng = random.Random(0)
    words = ["cat", "dog", "a", "house", "quiet river", "zebra"]
    requests = [(" ".join(rng.choices(words, k=rng.randint(1, 6))), " " + rng.choice(words)) for _ in range(9)]
    one = loglikelihood(model, tok, requests, batch_size=1)
    many = loglikelihood(model, tok, requests, batch_size=4)
    assert [g for _, g in one] == [g for _, g in many]
    for (a, _), (b, _) in zip(one, many):
        assert a == pytest.approx(b, abs=1e-4)
    assert model.training  # scoring restores the mode it found


# --- metrics --------------------------------------------------------------------------------------

NAMES = ["ann", "bob", "cyd", "dee", "eve", "fay", "gus", "hal"]


def test_a_model_trained_on_the_gold_answers_scores_acc_one(tmp_path):
    # Half the people like tea and half jam, so the model must read the context to pick the answer.
    rows = [{"question": f"what does {n} like?", "options": ["tea", "jam"], "answer": i % 2}
            for i, n in enumerate(NAMES)]
    spec = jsonl_task(tmp_path / "likes.jsonl", rows)
    tok = CharTokenizer(ALPHABET)
    model = tiny_gpt(tok.vocab_size)
    texts = [tok.encode(f"{r['question']} {r['options'][r['answer']]}") for r in rows]
    idx = torch.tensor([t[:-1] for t in texts])
    targets = torch.tensor([t[1:] for t in texts])
    optimizer = build_optimizer(model, OptimConfig(name="adamw", lr=3e-3), "cpu")
    for _ in range(150):
        loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    result = evaluate_task(model, tok, spec)
    assert result.n == 8 and result.metrics["chance"] == 0.5
    assert result.metrics["acc"] == 1.0 and result.metrics["centered"] == 1.0
    assert result.metrics["acc_stderr"] == 0.0


def test_an_untrained_model_scores_near_chance(tmp_path):
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    def word() -> str:
        return "".join(rng.choices(letters, k=5))
    rows = [{"question": f"{word()} {word()}?", "options": [word(), word()], "answer": rng.randint(0, 1)}
            for _ in range(300)]
    spec = jsonl_task(tmp_path / "noise.jsonl", rows)
    tok = CharTokenizer(ALPHABET)
    result = evaluate_task(tiny_gpt(tok.vocab_size), tok, spec, batch_size=64)
    acc, stderr = result.metrics["acc"], result.metrics["acc_stderr"]
    assert abs(acc - 0.5) < 0.15
    assert stderr == pytest.approx(math.sqrt(acc * (1 - acc) / 299))
    assert result.metrics["centered"] == pytest.approx((acc - 0.5) / 0.5)


def test_acc_norm_divides_by_the_choice_length(tmp_path):
    # A model with a zeroed output head gives every token log(1/V): the short choice wins on the
    # raw sum, the long one per character (the shared delimiter costs it less per character).
    rows = [{"question": "pick one", "options": ["aaaa", "b"], "answer": 0}]
    spec = jsonl_task(tmp_path / "norm.jsonl", rows)
    tok = CharTokenizer(ALPHABET)
    model = tiny_gpt(tok.vocab_size)
    with torch.no_grad():
        model.head.weight.zero_()
    metrics = evaluate_task(model, tok, spec).metrics
    assert metrics["acc"] == 0.0 and metrics["acc_norm"] == 1.0


def test_last_word_reports_greedy_accuracy_and_perplexity(tmp_path):
    tok = CharTokenizer(ALPHABET)
    model = tiny_gpt(tok.vocab_size)
    with torch.no_grad():
        model.head.weight.zero_()
    path = tmp_path / "lw.jsonl"
    path.write_text(json.dumps({"text": "the cat sat on the mat"}) + "\n", encoding="utf-8")
    spec = TaskSpec(name="lw", version=1, type="last_word", data_file=str(path), split="test", layout="jsonl",
                    doc_to_context=TASKS["lambada"].doc_to_context,
                    doc_to_choices=TASKS["lambada"].doc_to_choices, doc_to_gold=lambda doc: 0)
    metrics = evaluate_task(model, tok, spec).metrics
    # Uniform predictions: " mat" is 4 tokens of log(1/V) each, so ppl = V ** 4.
    assert metrics["ppl"] == pytest.approx(tok.vocab_size ** 4, rel=1e-4)
    assert metrics["chance"] == 0.0 and metrics["acc"] == 0.0


def test_fewshot_contexts_are_deterministic_and_exclude_the_example(tmp_path):
    rows = [{"question": f"q{i}:", "options": ["x", "y"], "answer": i % 2} for i in range(10)]
    spec = jsonl_task(tmp_path / "shots.jsonl", rows)
    pool = load_examples(spec)
    contexts = fewshot_contexts(spec, pool, list(range(10)), num_fewshot=3, seed=5)
    assert contexts == fewshot_contexts(spec, pool, list(range(10)), num_fewshot=3, seed=5)
    assert contexts != fewshot_contexts(spec, pool, list(range(10)), num_fewshot=3, seed=6)
    for i, context in enumerate(contexts):
        *shots, own = context.split("\n\n")
        assert own == f"q{i}:" and len(shots) == 3
        assert not any(s.startswith(f"q{i}:") for s in shots)
        assert all(s in {f"q{j}: {'xy'[j % 2]}" for j in range(10)} for s in shots)


# --- bad input ------------------------------------------------------------------------------------

def test_unknown_task_suggests_the_closest_name():
    with pytest.raises(UserError, match="Did you mean 'hellaswag'"):
        TASKS["helaswag"]


def test_missing_data_file_names_ablab_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLAB_DATA", str(tmp_path))
    with pytest.raises(UserError, match="ABLAB_DATA"):
        load_examples(TASKS["piqa"])
    monkeypatch.delenv("ABLAB_DATA")
    with pytest.raises(UserError, match="ABLAB_DATA"):
        load_examples(TASKS["arc_easy"])
