"""Generation tasks (SQuAD), generated tasks (arithmetic), tasks from TOML spec files, unencodable text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ablab.config import OptimConfig
from ablab.data.tokenizer import ByteTokenizer, CharTokenizer
from ablab.errors import DataError, UserError
from ablab.evals import (TASKS, bootstrap_stderr, evaluate_task, exact_match, generate_until, generation_metrics,
                         load_examples, load_spec_file, normalize_answer, resolve_task, token_f1)
from ablab.evals.scoring import mean_stderr
from ablab.model.optim import build_optimizer

from test_evals import ALPHABET, NAMES, tiny_gpt

# --- SQuAD ----------------------------------------------------------------------------------------


def test_squad_flattens_every_question_in_file_order_with_the_harness_prompt(shared_data):
    examples = load_examples(TASKS["squad"])
    assert len(examples) == 10_570
    first = examples[0]
    paragraph = json.loads((shared_data / "squad_v1.1/dev-v1.1.json").read_text())["data"][0]["paragraphs"][0]
    # lm-eval squadv2 doc_to_text, with the dataset's title (underscores kept, as the HF dataset has it).
    assert first.context == ("Title: Super_Bowl_50\n\nBackground: " + paragraph["context"] + "\n\n"
                             "Question: Which NFL team represented the AFC at Super Bowl 50?\n\nAnswer:")
    assert first.choices == ("Denver Broncos",) * 3 and first.continuations == (" Denver Broncos",) * 3
    assert TASKS["squad"].until == ("\n",)
    # Reference counts of the dev set, as its SOURCE.md lists them (1-6 answers per question).
    counts = {k: sum(len(ex.choices) == k for ex in examples) for k in range(1, 7)}
    assert counts == {1: 3, 2: 136, 3: 8490, 4: 759, 5: 1147, 6: 35}


@pytest.mark.parametrize("text, normalized", [
    ("The  Denver Broncos!", "denver broncos"),
    ("an Anthem, a song", "anthem song"),  # articles go only as whole words
    ("Denver-Broncos", "denverbroncos"),  # punctuation is deleted, not replaced by a space
    ("  Santa\tClara\n", "santa clara"),
])
def test_normalize_answer_is_the_official_one(text, normalized):
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize("prediction, references, em, f1", [
    ("the Denver Broncos", ["Denver Broncos"], 1.0, 1.0),
    # 2 shared of 3 predicted and 2 gold words: P = 2/3, R = 1, F1 = 2PR / (P + R) = 0.8.
    ("Denver Broncos won", ["the Denver Broncos"], 0.0, 0.8),
    # The best reference counts: 'Carolina' against 'Carolina Panthers' gives P = 1, R = 1/2, F1 = 2/3.
    ("Carolina", ["Denver Broncos", "Carolina Panthers"], 0.0, 2 / 3),
    # Words count with multiplicity: common {y: 2} of 3 and 3 words, P = R = 2/3.
    ("x y y", ["y y z"], 0.0, 2 / 3),
    ("Denver-Broncos", ["Denver Broncos"], 0.0, 0.0),
    ("", ["Denver Broncos"], 0.0, 0.0),
])
def test_exact_match_and_f1_on_hand_computed_cases(prediction, references, em, f1):
    assert exact_match(prediction, references) == em
    assert token_f1(prediction, references) == pytest.approx(f1)


def test_f1_stderr_is_a_seeded_bootstrap_of_the_per_example_f1():
    values = np.random.default_rng(0).random(400)
    stderr = bootstrap_stderr(values, seed=3)
    rng = np.random.default_rng(3)
    by_hand = values[rng.integers(0, 400, size=(1000, 400))].mean(axis=1).std(ddof=1)
    assert stderr == pytest.approx(by_hand, rel=1e-12)
    assert stderr == bootstrap_stderr(values, seed=3) and stderr != bootstrap_stderr(values, seed=4)
    # A bootstrap of a mean estimates the closed form sd / sqrt(n) (1000 resamples: a few % apart).
    assert stderr == pytest.approx(mean_stderr(values), rel=0.1)


def test_generation_metrics_combine_the_per_example_scores():
    references = [("Denver Broncos",), ("Carolina Panthers", "Panthers"), ("Santa Clara",), ("Levi's Stadium",)]
    completions = [" the Denver Broncos", " Carolina", " Santa Clara, California", " Levi's Stadium"]
    metrics = generation_metrics(references, completions, seed=7)
    em, f1 = np.array([1.0, 0.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.8, 1.0])  # 'Carolina' is not 'Panthers'
    f1[1] = 2 / 3
    assert metrics["exact_match"] == metrics["acc"] == metrics["centered"] == 0.5
    assert metrics["exact_match_stderr"] == pytest.approx(mean_stderr(em))
    assert metrics["f1"] == pytest.approx(f1.mean())
    assert metrics["f1_stderr"] == pytest.approx(bootstrap_stderr(f1, seed=7))
    assert metrics["chance"] == 0.0


# --- greedy generation ----------------------------------------------------------------------------


class ChainLM(torch.nn.Module):
    """Predicts the next character from the last one by a fixed table, so its output is known."""

    def __init__(self, tok: CharTokenizer, follows: dict[str, str], seq_len: int = 64):
        super().__init__()
        self.seq_len = seq_len
        table = torch.zeros(tok.vocab_size, tok.vocab_size)
        for prev, nxt in follows.items():
            table[tok.encode(prev)[0], tok.encode(nxt)[0]] = 1.0
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]  # (B, T, vocab)


@pytest.mark.parametrize("until, max_gen_tokens, completion", [
    (["\n"], 10, "bc"),
    ([], 5, "bc\ndd"),  # no stop string: exactly max_gen_tokens tokens
    (["c"], 10, "b"),
    (["zz", "\nd"], 10, "bc"),  # a stop string spanning two tokens, cut where it begins
    (["\n"], 1, "b"),
])
def test_generation_stops_at_the_first_stop_string_or_the_token_limit(until, max_gen_tokens, completion):
    tok = CharTokenizer(ALPHABET)
    model = ChainLM(tok, {"a": "b", "b": "c", "c": "\n", "\n": "d", "d": "d"})
    assert generate_until(model, tok, ["xa", "a"], until, max_gen_tokens) == [completion, completion]
    assert model.training


@pytest.mark.parametrize("max_gen_tokens, context_tokens", [(4, 12), (12, 8)])
def test_generation_left_truncates_the_context_and_equals_greedy_sampling(max_gen_tokens, context_tokens):
    # seq_len 16: the context keeps seq_len - max_gen_tokens tokens, but at least half the window.
    tok = CharTokenizer(ALPHABET)
    model = tiny_gpt(tok.vocab_size, seq_len=16, init_std=0.3)
    contexts = ["a long context that does not fit sixteen tokens", "short one", "what is it"]
    expected = []
    for context in contexts:
        ids = torch.tensor([tok.encode(context)[-context_tokens:]])
        out = model.generate(ids, max_gen_tokens, temperature=0)[0, ids.size(1):]
        expected.append(tok.decode(out.tolist()))
    assert generate_until(model, tok, contexts, [], max_gen_tokens, batch_size=1) == expected
    assert generate_until(model, tok, contexts, [], max_gen_tokens, batch_size=3) == expected


# --- arithmetic -----------------------------------------------------------------------------------

ARITHMETIC = re.compile(r"Question: What is (\d+) plus (\d+)\?\nAnswer:")


@pytest.mark.parametrize("name, low, high, first", [
    ("arithmetic", 1, 20, [(15, 4), (1, 3), (19, 2)]),
    ("arithmetic_hard", 10, 99, [(93, 38), (11, 77), (70, 69)]),
])
def test_arithmetic_problems_are_fixed_by_the_seed_and_correct(name, low, high, first):
    examples = load_examples(TASKS[name])
    assert examples == load_examples(TASKS[name]) and len(examples) == 1000
    operands = []
    for ex in examples:
        a, b = map(int, ARITHMETIC.fullmatch(ex.context).groups())
        assert low <= a <= high and low <= b <= high
        assert ex.continuations == (f" {a + b}",) and ex.gold == 0
        operands.append((a, b))
    assert operands[:3] == first  # version 1 is these problems for good
    assert {a for a, _ in operands} == {b for _, b in operands} == set(range(low, high + 1))


# --- a model trained on the gold answers, tasks from spec files ----------------------------------

# Half the people like tea and half jam, so the model must read the question to answer.
ROWS = [{"question": f"what does {n} like?", "options": ["tea", "jam"], "answer": i % 2,
         "food": ["tea", "jam"][i % 2]} for i, n in enumerate(NAMES)]


@pytest.fixture(scope="module")
def trained():
    """A tiny GPT trained on 'what does ann like? tea\\n' lines: greedy decoding gives every gold answer."""
    tok = CharTokenizer(ALPHABET)
    model = tiny_gpt(tok.vocab_size)
    texts = [tok.encode(f"{r['question']} {r['food']}\n") for r in ROWS]
    idx, targets = torch.tensor([t[:-1] for t in texts]), torch.tensor([t[1:] for t in texts])
    optimizer = build_optimizer(model, OptimConfig(name="adamw", lr=1e-2), "cpu")
    for _ in range(100):  # the loss then sits at its floor, log(8) / 23: only the name is unpredictable
        loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, tok


def write_task(folder: Path, toml: str, rows: list[dict] = ROWS, data: str = "likes.jsonl") -> Path:
    (folder / data).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = folder / "task.toml"
    path.write_text(toml, encoding="utf-8")
    return path


MULTIPLE_CHOICE = """name = "likes"
version = 1
type = "multiple_choice"
data_file = "likes.jsonl"
context = "{question}"
choices = "options"
label = "answer"
"""
GENERATION = """name = "likes_gen"
version = 1
type = "generation"
data_file = "likes.jsonl"
context = "{question}"
answers = "food"
max_gen_tokens = 8
"""
LAST_WORD = """name = "likes_lw"
version = 2
type = "last_word"
data_file = "likes.jsonl"
context = "{question}"
target = "{food}"
"""


def test_a_spec_file_generation_task_gets_exact_match_one_from_a_trained_model(tmp_path, trained):
    model, tok = trained
    spec = resolve_task(str(write_task(tmp_path, GENERATION)))
    assert (spec.type, spec.until, spec.max_gen_tokens) == ("generation", ("\n",), 8)
    assert generate_until(model, tok, ["what does bob like?"], spec.until, 8) == [" jam"]
    result = evaluate_task(model, tok, spec)
    assert (result.task, result.version, result.n, result.skipped) == ("likes_gen", 1, 8, 0)
    assert result.metrics["exact_match"] == result.metrics["acc"] == result.metrics["f1"] == 1.0
    assert result.metrics["exact_match_stderr"] == 0.0 and result.metrics["f1_stderr"] == 0.0


@pytest.mark.parametrize("toml, acc", [(MULTIPLE_CHOICE, 1.0), (LAST_WORD, 1.0)])
def test_spec_file_tasks_score_a_model_trained_on_their_gold_answers(tmp_path, trained, toml, acc):
    model, tok = trained
    spec = load_spec_file(write_task(tmp_path, toml))
    result = evaluate_task(model, tok, spec)
    assert result.n == 8 and result.metrics["acc"] == acc
    if spec.type == "multiple_choice":
        assert result.metrics["chance"] == 0.5 and result.metrics["centered"] == 1.0
    # A model that has not learned the answers does worse on the same spec.
    assert evaluate_task(tiny_gpt(tok.vocab_size), tok, spec).metrics["acc"] < acc


def test_a_wrong_model_gets_partial_f1_on_a_spec_generation_task(tmp_path):
    # ChainLM answers ' tea' after every '?', so it is right on half the people.
    tok = CharTokenizer(ALPHABET)
    model = ChainLM(tok, {"?": " ", " ": "t", "t": "e", "e": "a", "a": "\n"})
    result = evaluate_task(model, tok, load_spec_file(write_task(tmp_path, GENERATION)))
    assert result.metrics["exact_match"] == 0.5 and result.metrics["f1"] == 0.5


# --- spec files that point at the real data equal the built-in tasks ------------------------------

def test_spec_files_reproduce_the_built_in_arc_easy_and_piqa(tmp_path, shared_data):
    arc = tmp_path / "arc.toml"
    arc.write_text(f"""name = "arc_spec"
version = 1
type = "multiple_choice"
data_file = "{shared_data / 'arc_easy/ARC-Easy-Test.jsonl'}"
context = "Question: {{question.stem}}\\nAnswer:"
choices = "question.choices.text"
choice_labels = "question.choices.label"
label = "answerKey"
""")
    assert load_examples(load_spec_file(arc)) == load_examples(TASKS["arc_easy"])
    piqa = tmp_path / "piqa.toml"
    piqa.write_text(f"""name = "piqa_spec"
version = 1
type = "multiple_choice"
data_file = "{shared_data / 'piqa/valid.jsonl'}"
labels_file = "{shared_data / 'piqa/valid-labels.lst'}"
context = "Question: {{goal}}\\nAnswer:"
choices = ["sol1", "sol2"]
label = "label"
""")
    assert load_examples(load_spec_file(piqa)) == load_examples(TASKS["piqa"])


# --- spec file errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("context =", "contxt ="), r"unknown key 'contxt'.*Did you mean 'context'"),
    (lambda t: t.replace('context = "{question}"\n', ""), "lacks the required key context"),
    (lambda t: t.replace('"multiple_choice"', '"multi"'), "'multi' is not a task type"),
    (lambda t: t.replace("likes.jsonl", "missing.jsonl"), "missing.jsonl does not exist"),
    (lambda t: t.replace("{question}", "{questoin}"), "no field 'questoin'"),
    (lambda t: t.replace('"options"', '"choices"'), "no field 'choices'"),
    (lambda t: t.replace("{question}", "{question name}"), "not a field name"),
    (lambda t: t.replace("version = 1", 'version = "1"'), "'version' must be a TOML integer"),
    (lambda t: t + "until = [\"\\n\"]\n", "'until' is a key of generation tasks"),
    (lambda t: t.replace('label = "answer"\n', ""), "needs 'label'"),
    (lambda t: t.replace('label = "answer"', 'label = "question"'), "is not an integer index, a letter or one of"),
    (lambda t: t + "label_offset = 1\n", "index -1 for 2 choices; fix label_offset"),
    (lambda t: t.replace("version = 1", "version = "), "not valid TOML"),
])
def test_spec_file_errors_name_the_file_and_the_problem(tmp_path, edit, message):
    path = write_task(tmp_path, edit(MULTIPLE_CHOICE))
    with pytest.raises(UserError, match=message) as caught:
        load_spec_file(path)
    assert str(path) in str(caught.value)


def test_answer_keys_must_be_exactly_one_of_target_and_answers(tmp_path):
    with pytest.raises(UserError, match="exactly one of target"):
        load_spec_file(write_task(tmp_path, GENERATION + 'target = "{food}"\n'))
    with pytest.raises(UserError, match="exactly one of target"):
        load_spec_file(write_task(tmp_path, GENERATION.replace('answers = "food"\n', "")))


def test_resolve_task_takes_a_name_or_a_spec_file(tmp_path):
    assert resolve_task("piqa") is TASKS["piqa"]
    with pytest.raises(UserError, match="Did you mean 'piqa'"):
        resolve_task("pika")
    with pytest.raises(UserError, match="does not exist"):
        resolve_task(str(tmp_path / "nowhere.toml"))
    assert resolve_task(str(write_task(tmp_path, MULTIPLE_CHOICE))).name == "likes"


# --- text a char tokenizer cannot encode ----------------------------------------------------------

UNENCODABLE = [{"question": "what does zoé like?", "options": ["tea", "jam"], "answer": 0, "food": "tea"},
               {"question": "what does ann like?", "options": ["tea", "café"], "answer": 1, "food": "café"},
               {"question": "WHAT does bob like?", "options": ["tea", "jam"], "answer": 1, "food": "jam"}]


@pytest.mark.parametrize("toml", [MULTIPLE_CHOICE, GENERATION, LAST_WORD])
def test_a_char_model_skips_examples_it_cannot_encode_and_counts_them(tmp_path, trained, toml):
    model, tok = trained
    with pytest.raises(DataError):
        tok.encode(UNENCODABLE[0]["question"])
    spec = load_spec_file(write_task(tmp_path, toml, ROWS[:4] + UNENCODABLE + ROWS[4:]))
    result = evaluate_task(model, tok, spec)
    # An unknown character in the question, in an answer (café), or capitals: all three are skipped.
    assert (result.n, result.skipped) == (8, 3)
    assert result.metrics["acc"] == 1.0
    # Few-shot prompts draw their solved examples only from encodable ones, so nothing fails to encode.
    shots = evaluate_task(model, tok, spec, num_fewshot=2, seed=1)
    assert (shots.n, shots.skipped) == (result.n, result.skipped)


def test_a_char_model_that_can_encode_no_example_is_told_to_use_byte_or_bpe(shared_data):
    tok = CharTokenizer(ALPHABET)  # lower case only: every SQuAD prompt has capitals
    with pytest.raises(UserError, match="none of the task's 20 examples can be encoded.*'byte' or 'bpe'"):
        evaluate_task(tiny_gpt(tok.vocab_size), tok, TASKS["squad"], limit=20)
    byte = ByteTokenizer()
    result = evaluate_task(tiny_gpt(byte.vocab_size, seq_len=64), byte, TASKS["squad"], limit=4, batch_size=4)
    assert (result.n, result.skipped) == (4, 0)
    assert 0.0 <= result.metrics["exact_match"] <= result.metrics["f1"] <= 1.0
