"""Benchmark tasks by name: where their data lives and how each document becomes a scored example.

A task is a declarative `TaskSpec` (as an lm-evaluation-harness task YAML is): a data file relative to
`ABLAB_DATA` (or documents generated from a seed), its layout, and three small functions from a
document to the context text, the answer choices (for a generation task, the reference answers) and
the gold index. Prompts follow the harness's templates for the same datasets, so scores are
comparable with published lm-eval numbers (given the same tokenizer-free text). Tasks written as a
TOML file, with no Python, are read by `ablab.evals.specfile.load_spec_file`.

    spec = TASKS["piqa"]
    examples = load_examples(spec, limit=200, seed=0)
    TASKS.register(TaskSpec.from_jsonl("my_qa", "/data/my_qa.jsonl", "question", "options", "answer"))
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

from ablab.errors import DataError, UserError

Doc = dict

# How a multiple-choice answer is picked from its choices' summed log-likelihoods: the sum (acc, which
# favours short choices), per character of the choice (lm-eval's acc_norm, the delimiter not counted),
# per UTF-8 byte and per token of the continuation as scored, delimiter included.
METRICS = {"acc": "summed log-likelihood", "acc_norm": "log-likelihood per character of the choice",
           "acc_per_byte": "log-likelihood per byte scored", "acc_per_token": "log-likelihood per token scored"}


@dataclass(frozen=True)
class Example:
    """One scored item: the prompt, its continuations as scored (each begins with the target
    delimiter), and which continuation is right. `choices` are the scored texts without the delimiter,
    whose lengths normalise acc_norm; for a generation task they are the reference answers, and the
    gold one is the few-shot answer. Under partial scoring (lm-eval's multiple-input tasks, such as
    winogrande) choice i is the shared continuation scored after `contexts[i]`, and `context` is the
    gold one's, which a few-shot prompt shows solved."""

    context: str
    continuations: tuple[str, ...]
    gold: int
    choices: tuple[str, ...]
    contexts: tuple[str, ...] = ()  # partial scoring: one context per choice; empty: all after `context`


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: int  # bump whenever a prompt or the data changes; stored results are keyed by it
    type: Literal["multiple_choice", "last_word", "generation"]
    data_file: str  # relative to ABLAB_DATA, or an absolute path; "" for a generated layout
    split: str  # the split this file is, in the harness's words
    layout: Literal["jsonl", "hellaswag_6line", "squad_json", "generated"]
    doc_to_context: Callable[[Doc], str]
    doc_to_choices: Callable[[Doc], list[str]]
    doc_to_gold: Callable[[Doc], int]
    labels_file: str | None = None  # a line-aligned label per document, stored as doc["label"]
    target_delimiter: str = " "  # between context and choice, as lm-eval's target_delimiter
    fewshot_delimiter: str = "\n\n"  # between few-shot examples, as lm-eval's fewshot_delimiter
    template: str = ""  # the prompt in words, for reports
    until: tuple[str, ...] = ("\n",)  # generation stops at the first of these (not kept in the answer)
    max_gen_tokens: int = 32  # generation stops after this many tokens
    # The "generated" layout: the documents are generator(random.Random(generator_seed)), so the seed
    # is part of the task's identity (a version always means the same documents).
    generator: Callable[[random.Random], list[Doc]] | None = None
    generator_seed: int = 0
    # Partial scoring: each choice is appended to the context, and this shared continuation is scored
    # after each (lm-eval's multiple-input tasks); None scores each choice after the context.
    doc_to_continuation: Callable[[Doc], str] | None = None
    metric: str = "acc"  # the multiple-choice metric reports read (one of METRICS)

    @classmethod
    def from_jsonl(cls, name: str, path: str | Path, context_field: str, choices_field: str,
                   label_field: str, version: int = 1, split: str = "test") -> TaskSpec:
        """A multiple-choice task from a jsonl whose lines hold a context string, a list of choice
        strings and an integer gold index; the prompt is the context as is."""
        def gold(doc: Doc) -> int:
            return int(doc[label_field])
        return cls(name=name, version=version, type="multiple_choice", data_file=str(path), split=split,
                   layout="jsonl", doc_to_context=lambda doc: str(doc[context_field]),
                   doc_to_choices=lambda doc: [str(c) for c in doc[choices_field]], doc_to_gold=gold,
                   template=f"{{{context_field}}} -> ' ' + {{{choices_field}[i]}}")


class TaskRegistry(dict):
    """Tasks by name; an unknown name is a user error with the closest known name."""

    def __missing__(self, name: str) -> TaskSpec:
        match = difflib.get_close_matches(name, list(self), n=1, cutoff=0.5)
        hint = f" Did you mean '{match[0]}'?" if match else ""
        raise UserError(f"Unknown task '{name}': use one of {', '.join(sorted(self))}, or the path of a "
                        f"task spec file ending in .toml.{hint}")

    def register(self, spec: TaskSpec) -> TaskSpec:
        self[spec.name] = spec
        return spec


def data_path(spec: TaskSpec, relative: str) -> Path:
    path = Path(relative)
    if path.is_absolute():
        if not path.is_file():
            raise DataError(f"Task '{spec.name}' needs {path}, which does not exist; fix the task's path.")
        return path
    root = os.environ.get("ABLAB_DATA")
    if not root:
        raise DataError(f"Task '{spec.name}' reads {relative} under ABLAB_DATA, which is unset; "
                        "set ABLAB_DATA to the folder holding the benchmark data.")
    full = Path(root) / path
    if not full.is_file():
        raise DataError(f"Task '{spec.name}' needs {full}, which does not exist; set ABLAB_DATA to the "
                        f"folder holding {relative}.")
    return full


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err.reason}); replace it with the original file.") from err


def _jsonl_docs(path: Path) -> Iterator[Doc]:
    for number, line in enumerate(_read_lines(path), start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {number} is not JSON ({err.msg}); fix or remove that line.") from err


def _hellaswag_docs(path: Path) -> Iterator[Doc]:
    """llama.cpp's layout: 'activity_label: ctx', the gold index, then the four endings."""
    lines = _read_lines(path)
    if len(lines) % 6:
        raise DataError(f"{path} has {len(lines)} lines, not a multiple of 6; use the original hellaswag_val_full.txt.")
    for i in range(0, len(lines), 6):
        yield {"query": lines[i], "label": int(lines[i + 1]), "endings": lines[i + 2 : i + 6]}


def _squad_docs(path: Path) -> Iterator[Doc]:
    """SQuAD's nested JSON flattened to one document per question, in file order."""
    try:
        articles = json.loads("\n".join(_read_lines(path)))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path} is not SQuAD JSON ({err}); use the original dev-v1.1.json.") from err
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield {"id": qa["id"], "title": article["title"], "context": paragraph["context"],
                       "question": qa["question"], "answers": [a["text"] for a in qa["answers"]]}


def read_docs(spec: TaskSpec) -> list[Doc]:
    if spec.layout == "generated":
        return spec.generator(random.Random(spec.generator_seed))
    path = data_path(spec, spec.data_file)
    readers = {"hellaswag_6line": _hellaswag_docs, "squad_json": _squad_docs}
    docs = list(readers.get(spec.layout, _jsonl_docs)(path))
    if spec.labels_file is not None:
        labels = [line.strip() for line in _read_lines(data_path(spec, spec.labels_file)) if line.strip()]
        if len(labels) != len(docs):
            raise DataError(f"Task '{spec.name}': {len(labels)} labels for {len(docs)} documents; "
                            "use the label file that belongs to this data file.")
        for doc, label in zip(docs, labels):
            doc["label"] = label
    return docs


def to_example(spec: TaskSpec, doc: Doc) -> Example:
    choices = tuple(spec.doc_to_choices(doc))
    gold = spec.doc_to_gold(doc)
    if not 0 <= gold < len(choices):
        raise DataError(f"Task '{spec.name}' has gold index {gold} for {len(choices)} choices in {doc!r:.80}; "
                        "fix the label field or the data.")
    context = spec.doc_to_context(doc)
    if spec.doc_to_continuation is None:
        return Example(context, tuple(spec.target_delimiter + c for c in choices), gold, choices)
    contexts = tuple(context + c for c in choices)
    shared = spec.doc_to_continuation(doc)
    return Example(contexts[gold], (spec.target_delimiter + shared,) * len(choices), gold,
                   (shared,) * len(choices), contexts)


_POOLS: dict[tuple, list[Example]] = {}  # parsed examples by (spec, data files' size and mtime)


def _pool(spec: TaskSpec) -> list[Example]:
    """Every example of the task, parsed once per process while its files are unchanged: evaluation
    during training scores the same tasks again and again (hellaswag parses in about 0.3 s)."""
    files = [] if spec.layout == "generated" else [spec.data_file, *([spec.labels_file] if spec.labels_file else [])]
    stamps = []
    for name in files:
        path = data_path(spec, name)
        stat = path.stat()
        stamps.append((str(path), stat.st_size, stat.st_mtime_ns))
    key = (spec, tuple(stamps))
    if key not in _POOLS:
        if len(_POOLS) >= 32:
            _POOLS.clear()
        _POOLS[key] = [to_example(spec, doc) for doc in read_docs(spec)]
    return _POOLS[key]


def load_examples(spec: TaskSpec, limit: int | None = None, seed: int = 0) -> list[Example]:
    """All examples of the task's split in file order; with `limit`, a subset of that size drawn with
    random.Random(seed) (so a subset is not biased by the file's order), still in file order."""
    examples = list(_pool(spec))
    if limit is None or limit >= len(examples):
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


# --- built-in tasks -------------------------------------------------------------------------------

def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag `preprocess`: strip, ' [title]' -> '. ', drop [tags], collapse double spaces."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


_SENTENCE_END = re.compile(r"[.!?] ")


def hellaswag_context(doc: Doc) -> str:
    """lm-eval builds activity_label + ': ' + ctx_a + ' ' + ctx_b.capitalize(). The shared file only
    has the joined ctx, so ctx_b is recovered as the text after the last sentence end when it starts
    in lower case (ActivityNet items: ctx_b is a lower-case fragment such as 'he'); WikiHow items,
    whose ctx_b is empty, keep their text unchanged."""
    query = hellaswag_preprocess(doc["query"])
    label, sep, ctx = query.partition(": ")
    cut = max((m.end() for m in _SENTENCE_END.finditer(ctx)), default=0)
    ctx_b = ctx[cut:]
    if cut and ctx_b[:1].islower():
        ctx = ctx[:cut] + ctx_b.capitalize()
    return label + sep + ctx


def _choice_index(doc: Doc) -> int:
    labels = [c["label"] for c in doc["question"]["choices"]]
    return labels.index(doc["answerKey"])


def _lambada_context(doc: Doc) -> str:
    return doc["text"].rsplit(" ", 1)[0]


def _lambada_target(doc: Doc) -> list[str]:
    return [doc["text"].rsplit(" ", 1)[1]]


def _squad_context(doc: Doc) -> str:
    return f"Title: {doc['title']}\n\nBackground: {doc['context']}\n\nQuestion: {doc['question']}\n\nAnswer:"


def addition_problems(low: int, high: int, count: int, rng: random.Random) -> list[Doc]:
    """`count` sums a + b with both operands drawn uniformly from low..high inclusive."""
    docs = []
    for _ in range(count):
        a, b = rng.randint(low, high), rng.randint(low, high)
        docs.append({"a": a, "b": b, "answer": a + b})
    return docs


TASKS = TaskRegistry()
TASKS.register(TaskSpec(
    name="hellaswag", version=1, type="multiple_choice", data_file="hellaswag/hellaswag_val_full.txt",
    split="validation", layout="hellaswag_6line", doc_to_context=hellaswag_context,
    doc_to_choices=lambda doc: [hellaswag_preprocess(e) for e in doc["endings"]],
    doc_to_gold=lambda doc: doc["label"],
    template="lm-eval hellaswag: preprocess(activity_label + ': ' + ctx_a + ' ' + ctx_b.capitalize()) "
             "-> ' ' + preprocess(ending)"))
TASKS.register(TaskSpec(
    name="piqa", version=1, type="multiple_choice", data_file="piqa/valid.jsonl", split="validation",
    layout="jsonl", labels_file="piqa/valid-labels.lst",
    doc_to_context=lambda doc: f"Question: {doc['goal']}\nAnswer:",
    doc_to_choices=lambda doc: [doc["sol1"], doc["sol2"]], doc_to_gold=lambda doc: int(doc["label"]),
    template="lm-eval piqa: 'Question: {goal}\\nAnswer:' -> ' {sol1}' | ' {sol2}'"))
TASKS.register(TaskSpec(
    name="siqa", version=1, type="multiple_choice", data_file="social_iqa/dev.jsonl", split="validation",
    layout="jsonl", labels_file="social_iqa/dev-labels.lst",
    doc_to_context=lambda doc: f"Q: {doc['context']} {doc['question']}\nA:",
    doc_to_choices=lambda doc: [doc["answerA"], doc["answerB"], doc["answerC"]],
    doc_to_gold=lambda doc: int(doc["label"]) - 1,  # the .lst labels are 1-based
    template="lm-eval social_iqa: 'Q: {context} {question}\\nA:' -> ' {answerA|B|C}'"))
TASKS.register(TaskSpec(
    name="arc_easy", version=1, type="multiple_choice", data_file="arc_easy/ARC-Easy-Test.jsonl", split="test",
    layout="jsonl", doc_to_context=lambda doc: f"Question: {doc['question']['stem']}\nAnswer:",
    doc_to_choices=lambda doc: [c["text"] for c in doc["question"]["choices"]], doc_to_gold=_choice_index,
    template="lm-eval arc_easy: 'Question: {question}\\nAnswer:' -> ' {choices.text[i]}'"))
TASKS.register(TaskSpec(
    name="lambada", version=1, type="last_word", data_file="lambada/lambada_test.jsonl", split="test",
    layout="jsonl", doc_to_context=_lambada_context, doc_to_choices=_lambada_target, doc_to_gold=lambda doc: 0,
    template="lm-eval lambada_openai: text up to its last ' ' -> ' ' + last word"))
TASKS.register(TaskSpec(
    name="squad", version=1, type="generation", data_file="squad_v1.1/dev-v1.1.json", split="validation",
    layout="squad_json", doc_to_context=_squad_context, doc_to_choices=lambda doc: doc["answers"],
    doc_to_gold=lambda doc: 0,  # the first reference is the few-shot answer, as lm-eval's doc_to_target
    # SQuAD answers are short spans (a few words), so 32 tokens is ample where lm-eval allows 256.
    until=("\n",), max_gen_tokens=32,
    template="lm-eval squadv2: 'Title: {title}\\n\\nBackground: {context}\\n\\nQuestion: {question}\\n\\n"
             "Answer:' -> greedy until '\\n', exact match and F1 against the answers (SQuAD v1.1 script)"))


def arithmetic_task(name: str, low: int, high: int, seed: int, count: int = 1000) -> TaskSpec:
    """lm-eval's arithmetic addition prompt on `count` problems generated from `seed`; scored as a
    last word (the answer's greedy match), as lm-eval scores arithmetic."""
    return TaskSpec(
        name=name, version=1, type="last_word", data_file="", split="test", layout="generated",
        doc_to_context=lambda doc: f"Question: What is {doc['a']} plus {doc['b']}?\nAnswer:",
        doc_to_choices=lambda doc: [str(doc["answer"])], doc_to_gold=lambda doc: 0,
        generator=functools.partial(addition_problems, low, high, count), generator_seed=seed,
        template=f"lm-eval arithmetic: 'Question: What is {{a}} plus {{b}}?\\nAnswer:' -> ' {{a+b}}', "
                 f"{count} problems with a, b uniform in {low}..{high}, generator seed {seed}")


TASKS.register(arithmetic_task("arithmetic", 1, 20, seed=1234))
TASKS.register(arithmetic_task("arithmetic_hard", 10, 99, seed=5678))  # two-digit operands
