"""Tasks written as a TOML file beside a jsonl of documents, with no Python (as an lm-eval task YAML).

    # capitals.toml
    name = "capitals"
    version = 1
    type = "multiple_choice"          # or "last_word", "generation"
    data_file = "capitals.jsonl"      # relative to this file's folder, or absolute
    context = "Question: What is the capital of {country.name}?\\nAnswer:"
    choices = "options"               # a field holding a list, or a list of fields: ["sol1", "sol2"],
                                      # or { literal = ["no", "yes"] }, or { template = ["{a} {b}", "{c}"] }
    label = "answer"                  # an index (label_offset = 1 when 1-based), a bool, a letter ("B"),
                                      # a choice's text, or choice_labels = "labels" (its label among
                                      # them); label_map = { "1" = 0, entailment = "yes" } when none fits
    metric = "acc_per_byte"           # what reports read: acc (summed), acc_norm (lm-eval's, per
                                      # character), acc_per_byte or acc_per_token; all are computed

Partial scoring (lm-eval's multiple-input tasks, such as winogrande) scores one shared continuation
after a context per choice: `blank = "_"` cuts the context at its blank, each choice fills it, and the
text after it (stripped) is the continuation; or `continuation = "{rest}"` is scored after context + choice.

A last_word or generation task gives its answer as `target = "{answer}"` (a template) or
`answers = "answers"` (a field holding a string or a list of references); a generation task also takes
`until = ["\\n"]` and `max_gen_tokens = 32`. Optional everywhere: split, labels_file (one label per
line, stored as the field "label"), target_delimiter (" "), fewshot_delimiter ("\\n\\n").

A field reference `{field.sub}` walks into dicts, takes `{list.0}` by position, and maps over a list of
dicts (`{choices.text}` is every choice's text); `{{` and `}}` are literal braces.

    spec = resolve_task("capitals.toml")  # or a registered name: resolve_task("piqa")
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

from ablab.errors import DataError, UserError
from ablab.evals.tasks import METRICS, TASKS, Doc, TaskSpec, read_docs, to_example
from ablab.lab import read_user_text

_COMMON_KEYS: dict[str, type] = {
    "name": str, "version": int, "type": str, "data_file": str, "context": str, "split": str,
    "labels_file": str, "target_delimiter": str, "fewshot_delimiter": str,
}
_REQUIRED = ("name", "version", "type", "data_file", "context")
_TYPE_KEYS: dict[str, dict[str, type]] = {
    "multiple_choice": {"choices": object, "label": str, "label_offset": int, "choice_labels": str,
                        "label_map": dict, "blank": str, "continuation": str, "metric": str},
    "last_word": {"target": str, "answers": str},
    "generation": {"target": str, "answers": str, "until": list, "max_gen_tokens": int},
}
_TOML_NAMES = {str: "string", int: "integer", list: "array", dict: "table"}
_FIELD_REF = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_FIELD_PATH = re.compile(r"\w+(\.\w+)*")


def _lookup(spec_file: Path, doc: Doc, field: str) -> Any:
    value: Any = doc
    for key in field.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, list) and value and all(isinstance(v, dict) and key in v for v in value):
            value = [v[key] for v in value]
        else:
            fields = ", ".join(doc) if isinstance(doc, dict) else type(doc).__name__
            raise DataError(f"{spec_file}: a document has no field '{field}' (its fields: {fields}); "
                            "fix the spec file's field name or the data file.")
    return value


def _render(spec_file: Path, template: str, doc: Doc) -> str:
    def fill(match: re.Match) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        return str(_lookup(spec_file, doc, match.group(1)))
    return _FIELD_REF.sub(fill, template)


def _check_template(spec_file: Path, key: str, template: str) -> None:
    for match in _FIELD_REF.finditer(template):
        field = match.group(1)
        if field is not None and not _FIELD_PATH.fullmatch(field):
            raise UserError(f"{spec_file}: {key} has the field reference {match.group(0)!r}, which is not a field "
                            "name; write {field} or {field.sub}, and {{ or }} for a literal brace.")


def _read_toml(spec_file: Path) -> dict:
    if not spec_file.exists():
        raise UserError(f"Task spec file {spec_file} does not exist; give the path of an existing .toml file.")
    try:
        return tomllib.loads(read_user_text(spec_file, "task spec file"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{spec_file} is not valid TOML ({err}); fix the file's syntax.") from None


def _check_keys(spec_file: Path, table: dict) -> None:
    """Every key known to the spec's type and of its TOML type, and the required ones present."""
    kind = table.get("type")
    if kind is not None and (not isinstance(kind, str) or kind not in _TYPE_KEYS):
        raise UserError(f"{spec_file}: type {kind!r} is not a task type; use one of {', '.join(_TYPE_KEYS)}.")
    # Without a type every type's keys are allowed here, and the missing type is reported below.
    kinds = [kind] if kind else list(_TYPE_KEYS)
    allowed = {**_COMMON_KEYS, **{k: v for t in kinds for k, v in _TYPE_KEYS[t].items()}}
    for key, value in table.items():
        if key not in allowed:
            owners = [t for t, keys in _TYPE_KEYS.items() if key in keys]
            if owners:
                raise UserError(f"{spec_file}: '{key}' is a key of {' and '.join(owners)} tasks, not of "
                                f"{kind} ones; remove it or change type.")
            match = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
            hint = f" Did you mean '{match[0]}'?" if match else ""
            raise UserError(f"{spec_file}: unknown key '{key}'; use one of {', '.join(allowed)}.{hint}")
        expected = allowed[key]
        if expected is not object and (not isinstance(value, expected) or isinstance(value, bool)):
            raise UserError(f"{spec_file}: '{key}' must be a TOML {_TOML_NAMES[expected]}, not {value!r}; "
                            "fix that line.")
    missing = [key for key in _REQUIRED if key not in table]
    if missing:
        raise UserError(f"{spec_file} lacks the required key{'s' * (len(missing) > 1)} {', '.join(missing)}; "
                        "add them (see ablab.evals.specfile for the format).")


def _data_file(spec_file: Path, key: str, relative: str) -> Path:
    path = Path(relative).expanduser()
    path = path if path.is_absolute() else spec_file.parent / path
    if not path.is_file():
        raise DataError(f"{spec_file}: {key} {path} does not exist; fix the path (relative paths start "
                        "at the spec file's folder).")
    return path.resolve()


def _label_key(value: Any) -> str:
    """A label value as a label_map key: TOML keys are strings, so true, 1 and "B" are "true", "1", "B"."""
    return value if isinstance(value, str) else json.dumps(value)


def _gold_index(spec_file: Path, table: dict, value: Any, choices: list[str], doc: Doc) -> int:
    """The gold choice's index from a label's value: the index or choice text label_map gives it, else
    a bool (false 0, true 1, as lm-eval's boolq over ["no", "yes"]), an integer or a digit string (an
    index, less label_offset), its position in choice_labels, a choice's own text, or a letter ("B": 1)."""
    if "label_map" in table:
        mapping = table["label_map"]
        if _label_key(value) not in mapping:
            raise DataError(f"{spec_file}: label {value!r} is not a key of label_map ({', '.join(mapping)}); "
                            f"add it to label_map or fix the data.")
        mapped = mapping[_label_key(value)]
        if isinstance(mapped, int):
            return mapped
        if mapped not in choices:
            raise DataError(f"{spec_file}: label_map maps {value!r} to {mapped!r}, which is none of the choices "
                            f"{choices}; map each label to a choice's text or index.")
        return choices.index(mapped)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value - table.get("label_offset", 0)
    value = str(value)
    if "choice_labels" in table:
        labels = [str(x) for x in _lookup(spec_file, doc, table["choice_labels"])]
        if value not in labels:
            raise DataError(f"{spec_file}: label {value!r} is not one of {labels} in {table['choice_labels']}; "
                            "fix the data or the label/choice_labels fields.")
        return labels.index(value)
    if value.strip().lstrip("-").isdigit():
        return int(value) - table.get("label_offset", 0)
    if value in choices:
        return choices.index(value)
    if len(value) == 1 and "A" <= value <= "Z":
        return ord(value) - ord("A")
    raise DataError(f"{spec_file}: label {value!r} is not an integer index, a letter or one of the choices "
                    f"{choices}; add label_map = {{ \"{value}\" = 0 }} (a choice's index or text) for each value.")


def _choices_function(spec_file: Path, choices: Any) -> Callable[[Doc], list[str]]:
    """choices as a field holding a list, a list of fields, { literal = [...] } (the same strings for
    every document) or { template = [...] } (each choice a template over the document)."""
    if isinstance(choices, str):
        def from_field(doc: Doc) -> list[str]:
            value = _lookup(spec_file, doc, choices)
            return [str(c) for c in value] if isinstance(value, list) else [str(value)]
        return from_field
    if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
        braced = next((c for c in choices if "{" in c), None)
        if braced is not None:
            raise UserError(f"{spec_file}: choices lists fields, and {braced!r} is a template; write "
                            f"choices = {{ template = {json.dumps(choices)} }}.")
        return lambda doc: [str(_lookup(spec_file, doc, c)) for c in choices]
    if isinstance(choices, dict) and len(choices) == 1 and set(choices) <= {"literal", "template"}:
        (form, values), = choices.items()
        if not isinstance(values, list) or not values:
            raise UserError(f"{spec_file}: choices.{form} must be a non-empty array of strings, not {values!r}; "
                            "fix that line.")
        for value in values:
            if not isinstance(value, str):
                raise UserError(f"{spec_file}: choices.{form} holds {value!r}, which is not a string; quote it "
                                f"({json.dumps(str(value).lower() if isinstance(value, bool) else str(value))}).")
        if form == "literal":
            return lambda doc: list(values)
        for template in values:
            _check_template(spec_file, "choices.template", template)
        return lambda doc: [_render(spec_file, t, doc) for t in values]
    raise UserError(f"{spec_file}: choices must be a field name, a list of field names, "
                    "{ literal = [\"no\", \"yes\"] } or { template = [\"{sol1}\", \"{sol2}\"] }, "
                    f"not {choices!r}; fix that line.")


def _partial_scoring(spec_file: Path, table: dict) -> tuple[Callable[[Doc], str], Callable[[Doc], str] | None]:
    """(doc_to_context, doc_to_continuation): the context as is and no continuation, or under partial
    scoring the context before the blank and the text after it (stripped, as lm-eval's winogrande), or
    the context and the continuation template."""
    context = table["context"]
    if "blank" in table and "continuation" in table:
        raise UserError(f"{spec_file}: give blank or continuation, not both; remove one.")
    if "continuation" in table:
        continuation = table["continuation"]
        _check_template(spec_file, "continuation", continuation)
        return (lambda doc: _render(spec_file, context, doc)), (lambda doc: _render(spec_file, continuation, doc))
    if "blank" not in table:
        return (lambda doc: _render(spec_file, context, doc)), None
    blank = table["blank"]
    if not blank:
        raise UserError(f"{spec_file}: blank is empty; give the text that marks the gap, such as \"_\".")

    def split(doc: Doc) -> tuple[str, str]:
        text = _render(spec_file, context, doc)
        if blank not in text:
            raise DataError(f"{spec_file}: a document's context {text!r:.80} has no blank {blank!r}; "
                            "fix the data or the blank key.")
        before, _, after = text.partition(blank)
        return before, after.strip()
    return (lambda doc: split(doc)[0]), (lambda doc: split(doc)[1])


def _choice_functions(spec_file: Path, table: dict) -> tuple[Callable, Callable, str]:
    for key in ("choices", "label"):
        if key not in table:
            raise UserError(f"{spec_file}: a multiple_choice task needs '{key}'; add it "
                            "(choices: a list field or a list of fields; label: the gold field).")
    if "choice_labels" in table and "label_offset" in table:
        raise UserError(f"{spec_file}: give label_offset or choice_labels, not both; remove one.")
    for key, value in table.get("label_map", {}).items():
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            raise UserError(f"{spec_file}: label_map maps {key!r} to {value!r}; map each label to a choice's "
                            "index (an integer) or text (a string).")
    choices, label = table["choices"], table["label"]
    doc_to_choices = _choices_function(spec_file, choices)

    def doc_to_gold(doc: Doc) -> int:
        options, value = doc_to_choices(doc), _lookup(spec_file, doc, label)
        index = _gold_index(spec_file, table, value, options, doc)
        if not 0 <= index < len(options):
            raise DataError(f"{spec_file}: label {value!r} gives index {index} for {len(options)} choices; "
                            "fix label_offset (1 when labels count from 1), label_map or the data.")
        return index
    partial = {key: table[key] for key in ("blank", "continuation") if key in table}
    scoring = f", partial scoring ({', '.join(f'{k} {v!r}' for k, v in partial.items())})" if partial else ""
    return doc_to_choices, doc_to_gold, f"choices {choices!r}, gold {label!r}{scoring}"


def _metric(spec_file: Path, table: dict) -> str:
    metric = table.get("metric", "acc")
    if metric not in METRICS:
        raise UserError(f"{spec_file}: metric {metric!r} is not a multiple-choice metric; use one of "
                        f"{', '.join(METRICS)}.")
    return metric


def _answer_functions(spec_file: Path, table: dict) -> tuple[Callable, Callable, str]:
    if ("target" in table) == ("answers" in table):
        raise UserError(f"{spec_file}: a {table['type']} task needs exactly one of target (a template such as "
                        "\"{answer}\") or answers (a field holding the answer or a list of them).")
    if "target" in table:
        target = table["target"]
        _check_template(spec_file, "target", target)

        def doc_to_answers(doc: Doc) -> list[str]:
            return [_render(spec_file, target, doc)]
        return doc_to_answers, lambda doc: 0, f"target {target!r}"
    field = table["answers"]

    def doc_to_answers(doc: Doc) -> list[str]:
        value = _lookup(spec_file, doc, field)
        answers = [str(a) for a in value] if isinstance(value, list) else [str(value)]
        if not answers:
            raise DataError(f"{spec_file}: a document's {field} is an empty list; give every document an answer.")
        return answers
    return doc_to_answers, lambda doc: 0, f"answers {field!r} (the first is the few-shot answer)"


def _generation_options(spec_file: Path, table: dict) -> dict:
    until = table.get("until", ["\n"])
    if not all(isinstance(s, str) for s in until):
        raise UserError(f"{spec_file}: until must be a list of strings, such as [\"\\n\"]; fix that line.")
    max_gen_tokens = table.get("max_gen_tokens", 32)
    if max_gen_tokens < 1:
        raise UserError(f"{spec_file}: max_gen_tokens is {max_gen_tokens}; give at least 1.")
    return {"until": tuple(until), "max_gen_tokens": max_gen_tokens}


def load_spec_file(path: str | Path) -> TaskSpec:
    """The task a TOML spec file describes; checked against its first document, so a misspelt field
    fails here rather than mid-evaluation."""
    spec_file = Path(path).expanduser()
    table = _read_toml(spec_file)
    _check_keys(spec_file, table)
    context = table["context"]
    _check_template(spec_file, "context", context)
    options = _generation_options(spec_file, table) if table["type"] == "generation" else {}
    # blank and continuation are multiple_choice keys, so other tasks get their context as written.
    doc_to_context, options["doc_to_continuation"] = _partial_scoring(spec_file, table)
    if table["type"] == "multiple_choice":
        doc_to_choices, doc_to_gold, answer = _choice_functions(spec_file, table)
        options["metric"] = _metric(spec_file, table)
    else:
        doc_to_choices, doc_to_gold, answer = _answer_functions(spec_file, table)
    labels = table.get("labels_file")
    spec = TaskSpec(
        name=table["name"], version=table["version"], type=table["type"],
        data_file=str(_data_file(spec_file, "data_file", table["data_file"])),
        split=table.get("split", "test"), layout="jsonl",
        doc_to_context=doc_to_context, doc_to_choices=doc_to_choices, doc_to_gold=doc_to_gold,
        labels_file=None if labels is None else str(_data_file(spec_file, "labels_file", labels)),
        target_delimiter=table.get("target_delimiter", " "),
        fewshot_delimiter=table.get("fewshot_delimiter", "\n\n"),
        template=f"spec file {spec_file.name}: context {context!r}, {answer}", **options)
    docs = read_docs(spec)
    if not docs:
        raise DataError(f"{spec_file}: {spec.data_file} holds no documents; add some, one JSON object per line.")
    to_example(spec, docs[0])
    return spec


def resolve_task(name: str) -> TaskSpec:
    """A registered task by name, or the task of a spec file when `name` is a path ending in .toml."""
    if name in TASKS or not name.endswith(".toml"):
        return TASKS[name]
    return load_spec_file(name)


# Named groups of tasks, for --tasks and eval.tasks. `plan` is the research plan's suite, with its
# categories mapped to real datasets (docs/benchmarks.md): sentence completion -> hellaswag,
# simple QA -> arc_easy, word association -> lambada, reading comprehension -> squad.
SUITES = {
    "plan": ("hellaswag", "piqa", "siqa", "lambada", "arc_easy", "squad", "arithmetic"),
    "choice": ("hellaswag", "piqa", "siqa", "arc_easy"),  # multiple choice only: fast, log-likelihood
}
PLAN_CATEGORIES = {
    "sentence completion": "hellaswag", "simple QA": "arc_easy", "word association": "lambada",
    "reading comprehension": "squad", "simple arithmetic": "arithmetic",
}


def task_names(text: str | list[str]) -> list[str]:
    """Task names from a comma-separated list (or a list), suites expanded, repeats dropped."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for part in (p.strip() for p in parts):
        for name in SUITES.get(part, (part,)) if part else ():
            if name not in names:
                names.append(name)
    return names


def resolve_tasks(names: list[str], metric: str | None = None) -> list[TaskSpec]:
    """The task specs, every name checked before any model runs (registered names and .toml spec files);
    `metric` (one of METRICS) replaces the metric every multiple-choice task's report reads."""
    if not names:
        raise UserError("No benchmark tasks named; give e.g. --tasks piqa,arc_easy, or a suite: "
                        f"{', '.join(SUITES)}.")
    if metric is not None and metric not in METRICS:
        raise UserError(f"Metric {metric!r} is not a multiple-choice metric; use one of {', '.join(METRICS)}.")
    specs = [resolve_task(name) for name in names]
    if metric is None:
        return specs
    return [dataclasses.replace(s, metric=metric) if s.type == "multiple_choice" else s for s in specs]
