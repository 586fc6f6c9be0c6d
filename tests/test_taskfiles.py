"""Task files: literal and template choices, every label form, partial scoring (a context per choice),
the four multiple-choice normalisations and the one a report reads, and the mistakes a file can hold."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from ablab.config import ModelConfig
from ablab.data.tokenizer import ByteTokenizer, CharTokenizer
from ablab.errors import UserError
from ablab.evals import evaluate_task, load_examples, load_spec_file, loglikelihood
from ablab.evals.runner import eval_rows
from ablab.evals.scoring import _multiple_choice_metrics, choice_requests, fewshot_prefixes
from ablab.evals.specfile import resolve_tasks
from ablab.evals.tasks import Example
from ablab.model.gpt import GPT

ALPHABET = "abcdefghijklmnopqrstuvwxyz :?.\n"


def untrained_gpt(vocab_size: int, seed: int = 0, seq_len: int = 256) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64), vocab_size, seq_len).eval()


def write_task(folder: Path, toml: str, rows: list[dict]) -> Path:
    (folder / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = folder / "task.toml"
    path.write_text('name = "t"\nversion = 1\ntype = "multiple_choice"\ndata_file = "docs.jsonl"\n' + toml,
                    encoding="utf-8")
    return path


def examples_of(folder: Path, toml: str, rows: list[dict]) -> list[Example]:
    return load_examples(load_spec_file(write_task(folder, toml, rows)))


# --- choices and labels ---------------------------------------------------------------------------

YES_NO = """context = "{passage}\\nQuestion: {question}?\\nAnswer:"
choices = { literal = ["no", "yes"] }
label = "answer"
"""
BOOLQ_ROWS = [{"passage": "cats purr", "question": "do cats purr", "answer": True},
              {"passage": "fish swim", "question": "do fish fly", "answer": False}]


def test_literal_choices_and_a_bool_label_make_a_yes_no_task_from_the_data_as_it_is(tmp_path):
    first, second = examples_of(tmp_path, YES_NO, BOOLQ_ROWS)
    assert first.context == "cats purr\nQuestion: do cats purr?\nAnswer:"
    assert first.continuations == (" no", " yes") and first.choices == ("no", "yes")
    assert (first.gold, second.gold) == (1, 0)  # true is "yes", as lm-eval's boolq over ["no", "yes"]


def test_choice_templates_fill_each_choice_from_the_document(tmp_path):
    rows = [{"goal": "open a jar", "sol1": "twist the lid", "sol2": "shake it", "label": 1}]
    toml = 'context = "Goal: {goal}"\nchoices = { template = ["by: {sol1}", "by: {sol2}"] }\nlabel = "label"\n'
    (example,) = examples_of(tmp_path, toml, rows)
    assert example.continuations == (" by: twist the lid", " by: shake it") and example.gold == 1


@pytest.mark.parametrize("value, extra, gold", [
    (2, "", 2),                                   # an index
    (3, "label_offset = 1\n", 2),                 # a 1-based index
    ("3", "label_offset = 1\n", 2),               # a 1-based index as text (winogrande's "1"/"2")
    ("C", "", 2),                                 # a letter
    ("cat", "", 2),                               # a choice's own text
    ("feline", 'label_map = { feline = "cat", canine = "dog" }\n', 2),  # a value mapped to a choice's text
    (True, 'label_map = { "true" = 2, "false" = 0 }\n', 2),            # a bool mapped to an index
])
def test_a_label_may_be_an_index_a_letter_a_choices_text_or_mapped(tmp_path, value, extra, gold):
    rows = [{"q": "which purrs", "options": ["dog", "cow", "cat"], "answer": value}]
    (example,) = examples_of(tmp_path, 'context = "{q}"\nchoices = "options"\nlabel = "answer"\n' + extra, rows)
    assert example.gold == gold


# --- partial scoring ------------------------------------------------------------------------------

WINOGRANDE_ROWS = [
    {"sentence": "the cup did not fit in the box because _ was too big.", "option1": "the cup",
     "option2": "the box", "answer": "1"},
    {"sentence": "the cup did not fit in the box because _ was too small.", "option1": "the cup",
     "option2": "the box", "answer": "2"}]
WINOGRANDE = """context = "{sentence}"
blank = "_"
choices = ["option1", "option2"]
label = "answer"
label_offset = 1
"""


def test_a_blank_gives_each_choice_its_own_context_and_one_shared_continuation(tmp_path):
    first, second = examples_of(tmp_path, WINOGRANDE, WINOGRANDE_ROWS)
    assert first.contexts == ("the cup did not fit in the box because the cup",
                              "the cup did not fit in the box because the box")
    # The text after the blank, stripped, after the target delimiter (as lm-eval's winogrande).
    assert first.continuations == (" was too big.", " was too big.")
    assert (first.gold, second.gold) == (0, 1)
    assert second.context == second.contexts[1]  # a few-shot prompt shows the gold context solved


def test_a_continuation_template_is_scored_after_context_plus_each_choice(tmp_path):
    rows = [{"before": "the sky is ", "colours": ["blue", "green"], "after": "today", "gold": 0}]
    toml = 'context = "{before}"\nchoices = "colours"\ncontinuation = "{after}"\nlabel = "gold"\n'
    (example,) = examples_of(tmp_path, toml, rows)
    assert example.contexts == ("the sky is blue", "the sky is green")
    assert example.continuations == (" today", " today")


def test_partial_scoring_scores_the_shared_continuation_under_each_context(tmp_path):
    tok = CharTokenizer(ALPHABET)
    model = untrained_gpt(tok.vocab_size, seq_len=64)
    with torch.no_grad():  # far from uniform, so the two contexts give clearly different scores
        model.head.weight.normal_(0, 1.0)
    examples = load_examples(load_spec_file(write_task(tmp_path, WINOGRANDE, WINOGRANDE_ROWS)))
    by_hand = [[score for score, _ in loglikelihood(model, tok, [(c, ex.continuations[0]) for c in ex.contexts])]
               for ex in examples]
    picks = [max(range(2), key=scores.__getitem__) for scores in by_hand]
    # Labelled with the model's own picks it is always right, with the other option always wrong.
    for answers, acc in ((picks, 1.0), ([1 - p for p in picks], 0.0)):
        rows = [{**row, "answer": str(a + 1)} for row, a in zip(WINOGRANDE_ROWS, answers)]
        metrics = evaluate_task(model, tok, load_spec_file(write_task(tmp_path, WINOGRANDE, rows))).metrics
        # Every choice scores the same text, so normalising by its length cannot change the pick.
        assert metrics["acc"] == metrics["acc_norm"] == metrics["acc_per_byte"] == metrics["acc_per_token"] == acc


def test_a_few_shot_prompt_under_partial_scoring_puts_the_solved_shots_before_each_context(tmp_path):
    spec = load_spec_file(write_task(tmp_path, WINOGRANDE, WINOGRANDE_ROWS))
    pool = load_examples(spec)
    prefixes = fewshot_prefixes(spec, pool, [0], num_fewshot=1, seed=0)
    shot = "the cup did not fit in the box because the box was too small.\n\n"
    assert prefixes == [shot]
    assert choice_requests([pool[0]], prefixes) == [[(shot + c, " was too big.") for c in pool[0].contexts]]


# --- the normalisations, and the one a report reads -----------------------------------------------

def one_example(choices: tuple[str, str], gold: int = 0) -> Example:
    return Example("q:", tuple(" " + c for c in choices), gold, choices)


@pytest.mark.parametrize("choices, scores, tokens, picks", [
    # "ééé" is 3 characters, 7 bytes scored (the delimiter and 6), and 2 tokens here; "ab" 2, 3 and 3.
    (("ééé", "ab"), [-12.0, -10.0], [2, 3], {"acc": 1, "acc_norm": 0, "acc_per_byte": 0, "acc_per_token": 1}),
    # "é" is 1 character and 3 bytes scored; "abc" 3 characters and 4 bytes.
    (("é", "abc"), [-3.0, -5.0], [2, 4], {"acc": 0, "acc_norm": 1, "acc_per_byte": 0, "acc_per_token": 1}),
])
def test_each_normalisation_divides_by_what_it_names(choices, scores, tokens, picks):
    for gold in (0, 1):
        metrics = _multiple_choice_metrics([one_example(choices, gold)], scores, tokens)
        assert {name: metrics[name] for name in picks} == {name: float(p == gold) for name, p in picks.items()}


def test_the_task_names_the_metric_its_report_reads_and_centres(tmp_path, shared_data):
    spec = load_spec_file(write_task(tmp_path, YES_NO + 'metric = "acc_per_byte"\n', BOOLQ_ROWS * 5))
    result = evaluate_task(untrained_gpt(256), ByteTokenizer(), spec)
    m = result.metrics
    assert result.metric == "acc_per_byte"
    assert m["centered"] == pytest.approx((m["acc_per_byte"] - 0.5) / 0.5)
    assert m["centered_stderr"] == pytest.approx(m["acc_per_byte_stderr"] / 0.5)
    assert {"acc", "acc_norm", "acc_per_byte", "acc_per_token"} <= set(m)
    (row,) = eval_rows("r1", 0, [result], None, "now")
    assert row["data"]["metric"] == "acc_per_byte"
    # --metric replaces every multiple-choice task's metric; other tasks keep theirs.
    specs = resolve_tasks(["piqa", "lambada", str(tmp_path / "task.toml")], metric="acc_norm")
    assert [s.metric for s in specs] == ["acc_norm", "acc", "acc_norm"]
    with pytest.raises(UserError, match="use one of acc, acc_norm, acc_per_byte, acc_per_token"):
        resolve_tasks(["piqa"], metric="accuracy")


def piqa_with_longer_gold(data: Path) -> list[dict]:
    """The piqa validation items whose right solution is at least 1.25x as long as the wrong one (138)."""
    docs = [json.loads(line) for line in (data / "piqa" / "valid.jsonl").read_text().splitlines()]
    labels = (data / "piqa" / "valid-labels.lst").read_text().split()
    return [{**doc, "label": int(label)} for doc, label in zip(docs, labels)
            if len(doc[f"sol{int(label) + 1}"]) >= 1.25 * len(doc[f"sol{2 - int(label)}"])]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_untrained_model_is_at_chance_when_the_per_byte_score_is_read(tmp_path, shared_data, seed):
    rows = piqa_with_longer_gold(shared_data)
    toml = 'context = "Question: {goal}\\nAnswer:"\nchoices = ["sol1", "sol2"]\nlabel = "label"\n'
    result = evaluate_task(untrained_gpt(256, seed), ByteTokenizer(), load_spec_file(write_task(tmp_path, toml, rows)),
                           batch_size=64)
    m = result.metrics
    assert result.n == len(rows) == 138 and m["chance"] == 0.5
    # The summed log-likelihood picks the shorter, wrong, choice every time.
    assert m["acc"] < 0.5 - 5 * math.sqrt(0.25 / result.n)
    # lm-eval's acc_norm counts the delimiter in the sum and not in the length, so a near-uniform model
    # prefers the longer choice by it: here the right one.
    assert m["acc_norm"] > 0.5 + 5 * math.sqrt(0.25 / result.n)
    assert abs(m["acc_per_byte"] - 0.5) < 2 * m["acc_per_byte_stderr"]
    assert abs(m["acc_per_token"] - 0.5) < 2 * m["acc_per_token_stderr"]


# --- mistakes in a task file ----------------------------------------------------------------------

ROWS = [{"q": "which purrs", "options": ["dog", "cat"], "answer": 1, "word": "cat", "mood": "happy"}]
PLAIN = 'context = "{q}"\nchoices = "options"\nlabel = "answer"\n'


@pytest.mark.parametrize("toml, message", [
    (PLAIN + "choice_literal = 1\n", "unknown key 'choice_literal'"),
    (PLAIN.replace('"options"', '{ literal = ["no", 1] }'), r'holds 1, which is not a string; quote it \("1"\)'),
    (PLAIN.replace('"options"', '{ literal = ["no", true] }'), r'quote it \("true"\)'),
    (PLAIN.replace('"options"', '{ literals = ["no"] }'), r"choices must be a field name.*\{ literal ="),
    (PLAIN.replace('"options"', '["{q}", "word"]'), r"is a template; write choices = \{ template ="),
    (PLAIN.replace('"options"', '{ template = ["{q} {nope}"] }'), "no field 'nope'"),
    (PLAIN.replace('"answer"', '"mood"'), r"'happy' is not an integer index, a letter or one of the choices"),
    (PLAIN + 'label_map = { "1" = "cow" }\n', r"maps 1 to 'cow', which is none of the choices"),
    (PLAIN + 'label_map = { "0" = 1 }\n', "label 1 is not a key of label_map"),
    (PLAIN + 'label_map = { "1" = 1.5 }\n', "map each label to a choice's index"),
    (PLAIN + 'label_map = { "1" = 7 }\n', "gives index 7 for 2 choices"),
    (PLAIN + 'blank = "_"\n', "has no blank '_'"),
    (PLAIN + 'blank = "_"\ncontinuation = "{word}"\n', "give blank or continuation, not both"),
    (PLAIN + 'metric = "accuracy"\n', "use one of acc, acc_norm, acc_per_byte, acc_per_token"),
    (PLAIN + "label_map = 3\n", "'label_map' must be a TOML table"),
])
def test_task_file_mistakes_are_one_sentence_naming_the_fix(tmp_path, toml, message):
    path = write_task(tmp_path, toml, ROWS)
    with pytest.raises(UserError, match=message) as caught:
        load_spec_file(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


# --- ablab eval on a task file --------------------------------------------------------------------

def test_ablab_eval_prints_the_metric_each_task_reads(tmp_path):
    from ablab import config as C
    from ablab.train.launch import start_run

    from conftest import TINY, run_cli

    outcome = start_run(C.load(None, [*TINY, "data.tokenizer=byte", "train.max_steps=2", "eval.every=0"]), tmp_path)
    task = write_task(tmp_path, YES_NO + 'metric = "acc_per_byte"\n', BOOLQ_ROWS * 4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def reads(*args: str) -> str:
        result = run_cli("eval", outcome.run_id, "--tasks", str(task), *args, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        row = next(line for line in result.stdout.splitlines() if line.startswith("t "))
        return row.split()[3]
    assert reads() == "acc_per_byte"
    assert reads("--metric", "acc_norm") == "acc_norm"
    bad = run_cli("eval", outcome.run_id, "--tasks", str(task), "--metric", "accuracy", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "use one of acc, acc_norm" in bad.stderr
