"""The lm-evaluation-harness bridge: ablab's prompts and metrics equal the harness's own on the same
documents, and AblabLM's rolling log-likelihood and generation match the model computed by hand."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("lm_eval")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ablab.config import ModelConfig  # noqa: E402
from ablab.data.tokenizer import ByteTokenizer  # noqa: E402
from ablab.errors import UserError  # noqa: E402
from ablab.evals import TASKS, evaluate_task  # noqa: E402
from ablab.evals.harness import AblabLM, cut_at_stop, harness_yaml_for_local, run_harness  # noqa: E402
from ablab.model.gpt import GPT  # noqa: E402

N_DOCS = 40


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These matrices are too small to gain from a second thread, and on CPU cores shared with other
    jobs the thread pool's waits made this file take a minute instead of seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The bridge sets these for the process when unset; set here, they are restored after each test."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def first_jsonl(path: Path, n: int) -> list[dict]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line) for line in lines[:n]]


@pytest.fixture(scope="module")
def trained_gpt() -> GPT:
    """A tiny byte-level GPT trained for a few seconds on piqa text, so its choice scores are far from
    tied (float noise between two batchings cannot flip an argmax) and its greedy text is not one
    repeated character."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64), 256, 512)
    text = "".join(f"Question: {d['goal']}\nAnswer: {d['sol1']}\n\n"
                   for d in first_jsonl(Path("/work/shared/data/piqa/valid.jsonl"), 400))
    ids = torch.tensor(list(text.encode("utf-8")))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        starts = torch.randint(0, len(ids) - 129, (8,), generator=generator)
        batch = torch.stack([ids[s : s + 129] for s in starts])
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def piqa_slice(data: Path, ablab_root: Path, hf_root: Path) -> dict[str, str]:
    """The first N_DOCS piqa validation documents in ablab's layout and in the HF dataset's schema."""
    docs = first_jsonl(data / "piqa" / "valid.jsonl", N_DOCS)
    labels = (data / "piqa" / "valid-labels.lst").read_text().split()[:N_DOCS]
    write_jsonl(ablab_root / "piqa" / "valid.jsonl", docs)
    (ablab_root / "piqa" / "valid-labels.lst").write_text("\n".join(labels) + "\n")
    hf_rows = [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(label)}
               for d, label in zip(docs, labels)]
    return {"validation": str(write_jsonl(hf_root / "piqa_validation.jsonl", hf_rows))}


def arc_easy_slice(data: Path, ablab_root: Path, hf_root: Path) -> dict[str, str]:
    docs = first_jsonl(data / "arc_easy" / "ARC-Easy-Test.jsonl", N_DOCS)
    write_jsonl(ablab_root / "arc_easy" / "ARC-Easy-Test.jsonl", docs)
    hf_rows = [{"id": d["id"], "question": d["question"]["stem"],
                "choices": {"text": [c["text"] for c in d["question"]["choices"]],
                            "label": [c["label"] for c in d["question"]["choices"]]},
                "answerKey": d["answerKey"]} for d in docs]
    return {"test": str(write_jsonl(hf_root / "arc_easy_test.jsonl", hf_rows))}


@pytest.mark.parametrize("task, write_slice", [("piqa", piqa_slice), ("arc_easy", arc_easy_slice)])
def test_ablab_scores_equal_the_harness_on_its_own_templates(shared_data, tmp_path, monkeypatch,
                                                             trained_gpt, task, write_slice):
    ablab_root, hf_root = tmp_path / "ablab_data", tmp_path / "hf"
    data_files = write_slice(shared_data, ablab_root, hf_root)
    monkeypatch.setenv("ABLAB_DATA", str(ablab_root))
    tokenizer = ByteTokenizer()
    ours = evaluate_task(trained_gpt, tokenizer, TASKS[task])
    assert ours.n == N_DOCS

    yaml_path = harness_yaml_for_local(task, data_files, tmp_path / "tasks" / f"{task}.yaml")
    assert "dataset_path: json" in yaml_path.read_text()
    theirs = run_harness(trained_gpt, tokenizer, str(yaml_path))[task]

    # A model this small is far from perfect and from chance-by-ties; a real comparison needs both.
    assert 0 < ours.metrics["acc"] < 1
    assert theirs["acc"] == pytest.approx(ours.metrics["acc"], abs=1e-9)
    assert theirs["acc_norm"] == pytest.approx(ours.metrics["acc_norm"], abs=1e-9)
    assert theirs["acc_stderr"] == pytest.approx(ours.metrics["acc_stderr"], abs=1e-9)


def request(*args) -> SimpleNamespace:
    return SimpleNamespace(args=args)


def rolling_by_hand(model: GPT, ids: list[int]) -> float:
    """Tokens 1.. in chunks of seq_len, each chunk predicted from the seq_len tokens before its last
    token (the harness's rolling windows: every token once, with as much context as fits)."""
    total = 0.0
    with torch.no_grad():
        for a in range(1, len(ids), model.seq_len):
            b = min(a + model.seq_len, len(ids))
            inputs = ids[max(0, b - 1 - model.seq_len) : b - 1]
            logprobs = F.log_softmax(model(torch.tensor([inputs])), dim=-1)[0, -(b - a):]
            total += logprobs.gather(1, torch.tensor(ids[a:b])[:, None]).sum().item()
    return total


def test_loglikelihood_rolling_is_the_sum_of_the_models_token_logprobs(trained_gpt):
    tokenizer = ByteTokenizer()
    text = "Question: How do I open a jar?\nAnswer: Twist the lid while holding the jar firmly."
    ids = tokenizer.encode(text)
    with torch.no_grad():
        logprobs = F.log_softmax(trained_gpt(torch.tensor([ids[:-1]])), dim=-1)[0]
    whole_by_hand = logprobs.gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
    assert rolling_by_hand(trained_gpt, ids) == pytest.approx(whole_by_hand, abs=1e-4)

    (whole,) = AblabLM(trained_gpt, tokenizer).loglikelihood_rolling([request(text)])
    assert whole == pytest.approx(whole_by_hand, abs=1e-4)

    # A model with a 16-token window reads the 85-token text in 6 windows.
    short = GPT(trained_gpt.cfg, 256, 16)
    short.load_state_dict(trained_gpt.state_dict())
    (windowed,) = AblabLM(short, tokenizer, batch_size=4).loglikelihood_rolling([request(text)])
    assert windowed == pytest.approx(rolling_by_hand(short, ids), abs=1e-4)
    assert windowed != pytest.approx(whole_by_hand, abs=1e-2)  # less context: other numbers


def test_generate_until_is_greedy_decoding_cut_at_the_stop_string(trained_gpt):
    tokenizer = ByteTokenizer()
    prompt = "Question: How do I open a jar?\nAnswer:"
    ids = tokenizer.encode(prompt)
    with torch.no_grad():
        greedy = trained_gpt.generate(torch.tensor([ids]), 40, temperature=0)
    full = tokenizer.decode(greedy[0, len(ids):].tolist())
    # The last two characters of the greedy text whose first occurrence is where they stand.
    k = max(k for k in range(1, len(full) - 1) if full.find(full[k : k + 2]) == k)
    lm = AblabLM(trained_gpt, tokenizer)

    (uncut,) = lm.generate_until([request(prompt, {"until": ["\x00never"], "max_gen_toks": 40})])
    assert uncut == full
    (cut,) = lm.generate_until([request(prompt, {"until": ["\x00never", full[k : k + 2]], "max_gen_toks": 40})])
    assert cut == full[:k] and k > 0
    (short,) = lm.generate_until([request(prompt, {"until": "\x00never", "max_gen_toks": 3})])
    assert short == full[:3]


def test_cut_at_stop_uses_the_earliest_stop_string():
    assert cut_at_stop("abc\n\nQ: def", ["Q:", "\n\n"]) == "abc"
    assert cut_at_stop("abc", ["zz"]) == "abc"


def test_missing_harness_names_the_extra(monkeypatch, trained_gpt):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(UserError, match=r"pip install 'ablab\[harness\]'"):
        run_harness(trained_gpt, ByteTokenizer(), "piqa")


def test_a_task_whose_dataset_is_on_the_hub_says_to_use_local_files(tmp_path, monkeypatch, trained_gpt):
    import datasets.config
    import huggingface_hub.constants

    # As if datasets had been imported online before the bridge ran: the bridge must still not download.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yaml_path = tmp_path / "remote_task.yaml"
    yaml_path.write_text("task: remote_task\ndataset_path: ablab-tests/no-such-dataset\n"
                         "output_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{q}}'\n"
                         "doc_to_target: 0\ndoc_to_choice: '{{[a, b]}}'\n")
    with pytest.raises(UserError, match="dataset_path: json and dataset_kwargs.data_files") as raised:
        run_harness(trained_gpt, ByteTokenizer(), str(yaml_path))
    assert "OfflineModeIsEnabled" in str(raised.value)


def test_ablab_eval_harness_runs_a_local_task_yaml_on_a_run(shared_data, tmp_path):
    from ablab import config as C
    from ablab.train.launch import start_run

    from conftest import TINY, run_cli

    outcome = start_run(C.load(None, [*TINY, "data.tokenizer=byte", "train.max_steps=3", "eval.every=0"]), tmp_path)
    data_files = piqa_slice(shared_data, tmp_path / "ablab_data", tmp_path / "hf")
    yaml_path = harness_yaml_for_local("piqa", data_files, tmp_path / "tasks" / "piqa.yaml")
    result = run_cli("eval", outcome.run_id, "--harness", str(yaml_path), "--limit", "10", cwd=tmp_path,
                     env={**os.environ, "HF_HOME": str(tmp_path / "hf-home")})
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("piqa:"))
    acc = float(line.split("acc ")[1].split()[0])
    assert 0.0 <= acc <= 1.0 and "acc_norm" in line and f"run {outcome.run_id} at step 3" in result.stdout


# --- task files against the harness's own YAMLs ---------------------------------------------------

def boolq_rows(data: Path, n: int) -> list[dict]:
    """Yes/no questions from piqa in BoolQ's schema: does the first solution reach the goal? `label`
    (0/1) is super_glue's field, which the harness reads; `answer` (a bool) is google/boolq's."""
    docs = first_jsonl(data / "piqa" / "valid.jsonl", n)
    labels = (data / "piqa" / "valid-labels.lst").read_text().split()[:n]
    return [{"passage": f"Goal: {d['goal']} Solution: {d['sol1']}", "question": "does the solution reach the goal",
             "label": int(label == "0"), "answer": label == "0", "idx": i}
            for i, (d, label) in enumerate(zip(docs, labels))]


def winogrande_rows(data: Path, n: int) -> list[dict]:
    """Sentences with a blank in Winogrande's schema, from social_iqa: the question's person is blanked,
    and the options are the two people its context names (kept when it names exactly two)."""
    import random
    import re

    names = re.compile(r"\b[A-Z][a-z]+\b")
    words = {"The", "He", "She", "They", "It", "His", "Her", "After", "When", "Then", "But", "And", "As", "While"}
    rng, rows = random.Random(0), []
    for doc in first_jsonl(data / "social_iqa" / "dev.jsonl", 400):
        people = list(dict.fromkeys(w for w in names.findall(doc["context"]) if w not in words))
        asked = [p for p in people if re.search(rf"\b{p}\b", doc["question"])]
        if len(people) == 2 and len(asked) == 1:
            options = people if rng.random() < 0.5 else people[::-1]
            rows.append({"sentence": doc["context"] + " " + re.sub(rf"\b{asked[0]}\b", "_", doc["question"], count=1),
                         "option1": options[0], "option2": options[1], "answer": str(options.index(asked[0]) + 1)})
    return rows[:n]


BOOLQ_TOML = """name = "boolq_file"
version = 1
type = "multiple_choice"
data_file = "boolq.jsonl"
context = "{passage}\\nQuestion: {question}?\\nAnswer:"
choices = { literal = ["no", "yes"] }
label = "answer"
"""
WINOGRANDE_TOML = """name = "winogrande_file"
version = 1
type = "multiple_choice"
data_file = "winogrande.jsonl"
context = "{sentence}"
blank = "_"
choices = ["option1", "option2"]
label = "answer"
label_offset = 1
"""


@pytest.mark.parametrize("task, toml, rows, metrics", [
    ("boolq", BOOLQ_TOML, boolq_rows, ("acc", "acc_norm")),
    # The harness's acc_norm for a multiple-input task divides by each filled context's length, which
    # does not normalise the shared continuation; its winogrande YAML reports acc only, and ablab's
    # normalised scores equal acc there.
    ("winogrande", WINOGRANDE_TOML, winogrande_rows, ("acc",)),
])
def test_a_task_file_scores_as_the_harness_yaml_does_on_the_same_documents(shared_data, tmp_path, monkeypatch,
                                                                         trained_gpt, task, toml, rows, metrics):
    from ablab.evals import harness, load_examples, load_spec_file
    from ablab.evals.scoring import choice_requests, score_choices

    docs = rows(shared_data, N_DOCS if task == "boolq" else 30)
    data_file = write_jsonl(tmp_path / f"{task}.jsonl", docs)
    spec_file = tmp_path / f"{task}.toml"
    spec_file.write_text(toml, encoding="utf-8")
    spec, tokenizer = load_spec_file(spec_file), ByteTokenizer()
    # In float64, so that packed rows (ablab) and one request per row (the harness) agree beyond
    # float32's rounding (3e-6 on these sums) and 1e-6 compares the computations themselves.
    model = copy.deepcopy(trained_gpt).double()
    ours = evaluate_task(model, tokenizer, spec)
    examples = load_examples(spec)
    requests = choice_requests(examples, [""] * len(examples))
    our_scores = {pair: s for pairs, scores in zip(requests, score_choices(model, tokenizer, requests))
                  for pair, s in zip(pairs, scores)}

    seen: dict[tuple[str, str], float] = {}

    class Recording(harness.AblabLM):
        def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
            results = super().loglikelihood(requests)
            seen.update({tuple(r.args): score for r, (score, _) in zip(requests, results)})
            return results

    monkeypatch.setattr(harness, "AblabLM", Recording)
    yaml_path = harness_yaml_for_local(task, {"validation": str(data_file)}, tmp_path / "tasks" / f"{task}.yaml",
                                       metric_list=[{"metric": m} for m in metrics])
    theirs = run_harness(model, tokenizer, str(yaml_path))[task]

    # The same prompts, request for request, and the same log-likelihood for each.
    assert ours.n == len(docs) and set(seen) == set(our_scores) and len(seen) == 2 * len(docs)
    assert max(abs(seen[pair] - our_scores[pair]) for pair in seen) < 1e-6
    assert 0 < ours.metrics["acc"] < 1
    for metric in metrics:
        assert theirs[metric] == pytest.approx(ours.metrics[metric], abs=1e-9)
        assert theirs[f"{metric}_stderr"] == pytest.approx(ours.metrics[f"{metric}_stderr"], abs=1e-9)
