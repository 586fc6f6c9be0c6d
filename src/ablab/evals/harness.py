"""Run lm-evaluation-harness tasks on an ablab model, with the harness's requests scored by ablab.

    scores = run_harness(model, tokenizer, "arc_easy", limit=100)      # a task the harness knows
    yaml = harness_yaml_for_local("piqa", {"validation": "piqa.jsonl"}, Path("tasks/piqa.yaml"))
    scores = run_harness(model, tokenizer, str(yaml))                   # offline, the harness's template
    scores["piqa"]["acc"], scores["piqa"]["acc_norm"]

`AblabLM` answers the harness's three request types: `loglikelihood` through ablab's own
`scoring.loglikelihood` (so a harness task and ablab's `evaluate_task` score a prompt identically),
`loglikelihood_rolling` in windows of the model's seq_len, and greedy `generate_until`.

The harness is optional (the 'harness' extra): without it this module still imports, and using it
raises a UserError that names the extra. Datasets are never downloaded unless the user asks: HF_DATASETS_OFFLINE and
HF_HUB_OFFLINE default to 1 here, and a task whose data is on the Hub is pointed at local files with
`harness_yaml_for_local`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from ablab.data.tokenizer import Tokenizer
from ablab.errors import UserError
from ablab.evals.loglik import loglikelihood

try:  # the base class only; without the harness this module still imports and run_harness says how to get it
    from lm_eval.api.model import LM as _HarnessLM
except ImportError:
    _HarnessLM = object

MISSING_HARNESS = ("The lm-evaluation-harness bridge needs the 'harness' extra; "
                   "install it with pip install 'ablab[harness]'.")
_OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}
_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


@contextlib.contextmanager
def _inference(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _window_logprobs(model: torch.nn.Module, windows: list[tuple[list[int], list[int]]],
                     batch_size: int) -> list[float]:
    """Sum of log P(target token | everything before it) for each (context, target) token window,
    where context + target fits seq_len + 1 tokens."""
    device = next(model.parameters()).device
    sums = []
    for start in range(0, len(windows), batch_size):
        rows = [context + target for context, target in windows[start : start + batch_size]]
        # Right padding: under a causal mask, pad tokens after a row's end cannot change its logits.
        idx = torch.zeros(len(rows), max(len(r) for r in rows) - 1, dtype=torch.long)
        for i, row in enumerate(rows):
            idx[i, : len(row) - 1] = torch.tensor(row[:-1])
        logprobs = F.log_softmax(model(idx.to(device)).float(), dim=-1).cpu()  # (B, T, vocab)
        for i, (row, (_, target)) in enumerate(zip(rows, windows[start : start + batch_size])):
            end = len(row) - 1
            picked = logprobs[i, end - len(target) : end].gather(1, torch.tensor(target)[:, None])
            sums.append(picked.sum().item())
    return sums


def cut_at_stop(text: str, stops: list[str]) -> str:
    """The text before the earliest occurrence of any stop string (all of it when none occurs)."""
    cuts = [text.find(stop) for stop in stops if stop and stop in text]
    return text[: min(cuts)] if cuts else text


class AblabLM(_HarnessLM):
    """An ablab GPT and its tokenizer as an lm-evaluation-harness model (`lm_eval.api.model.LM`)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, batch_size: int = 16):
        if _HarnessLM is object:
            raise UserError(MISSING_HARNESS)
        super().__init__()
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
        """(log P(continuation | context), whether it is the greedy continuation) per request, from
        ablab's scoring; an empty context is a UserError, since ablab tokenizers have no BOS to
        condition on."""
        pairs = [(request.args[0], request.args[1]) for request in requests]
        results = loglikelihood(self.model, self.tokenizer, pairs, self.batch_size)
        for pair, result in zip(pairs, results):
            self.cache_hook.add_partial("loglikelihood", pair, result)
        return results

    def loglikelihood_rolling(self, requests: list) -> list[float]:
        """Each text's summed token log-probability, in the harness's rolling windows of seq_len
        predictions, each with as much context as fits. Ablab tokenizers have no BOS, so the first
        token is the prefix the harness would condition on and is itself not scored."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        results = []
        with _inference(self.model):
            for request in requests:
                ids = self.tokenizer.encode(request.args[0])
                windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                    ids[1:], ids[0], self.model.seq_len, context_len=1)] if len(ids) > 1 else []
                total = sum(_window_logprobs(self.model, windows, self.batch_size))
                self.cache_hook.add_partial("loglikelihood_rolling", (request.args[0],), total)
                results.append(total)
        return results

    def generate_until(self, requests: list) -> list[str]:
        """Greedy continuations of each context, cut before the first of gen_kwargs["until"] and at
        most gen_kwargs["max_gen_toks"] tokens (256, the harness's default, when absent). Sampling
        settings are ignored: the harness asks this method for greedy decoding."""
        results = []
        for request in requests:
            context, gen_kwargs = request.args[0], request.args[1]
            text = self._greedy_until(context, dict(gen_kwargs or {}))
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            results.append(text)
        return results

    def _greedy_until(self, context: str, gen_kwargs: dict) -> str:
        until = gen_kwargs.get("until") or []
        stops = [until] if isinstance(until, str) else list(until)
        ids = self.tokenizer.encode(context)
        if not ids:
            raise UserError("A generation request has a context that encodes to no tokens; "
                            "give every generation task a non-empty prompt.")
        idx = torch.tensor([ids], device=next(self.model.parameters()).device)
        text = ""
        with _inference(self.model):
            for _ in range(int(gen_kwargs.get("max_gen_toks", 256))):
                idx = self.model.generate(idx, 1, temperature=0.0)
                text = self.tokenizer.decode(idx[0, len(ids):].tolist())
                if any(stop and stop in text for stop in stops):
                    break
        return cut_at_stop(text, stops)


# --- running tasks ---------------------------------------------------------------------------------

def _import_harness_offline():
    """lm_eval, imported with downloads off unless the user set the switches to 0. datasets and
    huggingface_hub read the switches once, at import, so if anything imported them before this
    call, their module constants are set to match the environment as well."""
    for var in _OFFLINE_VARS:
        os.environ.setdefault(var, "1")
    try:
        import datasets.config
        import huggingface_hub.constants
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise UserError(MISSING_HARNESS) from err
    huggingface_hub.constants.HF_HUB_OFFLINE = os.environ["HF_HUB_OFFLINE"].upper() in _TRUE
    datasets_offline = os.environ["HF_DATASETS_OFFLINE"].upper() in _TRUE
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = datasets_offline
    return lm_eval, TaskManager


def _read_task_yaml(path: Path) -> dict:
    """A harness task YAML with its `include`s merged (its own keys win), as the harness reads it;
    `!function` values stay as their text."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader) or {}
    includes = cfg.pop("include", [])
    merged: dict = {}
    for include in [includes] if isinstance(includes, str) else includes:
        merged.update(_read_task_yaml(path.parent / include))  # an absolute include stays absolute
    merged.update(cfg)
    return merged


def _load_failed(spec: str, err: Exception) -> UserError:
    reason = str(err).splitlines()[0][:200] if str(err) else ""
    return UserError(f"The harness could not load task '{spec}' ({type(err).__name__}: {reason}); "
                     "point the task YAML at local files with dataset_path: json and "
                     "dataset_kwargs.data_files (ablab.evals.harness.harness_yaml_for_local writes one).")


def _load_tasks(manager, spec: str) -> list:
    """The task or group objects `spec` names, loaded here so that a dataset the harness cannot fetch
    is reported as such, not confused with a failure while scoring."""
    try:
        loaded = manager.load([spec])
    except KeyError as err:
        raise UserError(f"The harness has no task '{spec}'; give a name that `lm_eval ls tasks` lists "
                        "or the path of a task YAML.") from err
    except UserError:
        raise
    except Exception as err:  # the harness runs each task's own dataset code, which may raise anything
        raise _load_failed(spec, err) from err
    nested = {child for children in loaded["group_map"].values() for child in children}
    return ([group for name, group in loaded["groups"].items() if name not in nested]
            + [task for name, task in loaded["tasks"].items() if name not in nested])


def _metric_table(results: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from the harness's {"task": {"acc,none": ..., "alias": ...}}: the
    unfiltered ("none") metrics keep their bare name, filtered ones stay "metric,filter"."""
    table = {}
    for task, row in results.items():
        metrics = {}
        for key, value in row.items():
            metric, _, filter_name = key.partition(",")
            if filter_name and isinstance(value, (int, float)):  # skips alias and "N/A" stderrs
                metrics[metric if filter_name == "none" else key] = float(value)
        table[task] = metrics
    return table


def run_harness(model: torch.nn.Module, tokenizer: Tokenizer, task_or_yaml: str, limit: int | None = None,
                num_fewshot: int | None = None, batch_size: int = 16) -> dict[str, dict[str, float]]:
    """Per-task metrics of the model on a harness task (a name from the harness's registry, or the
    path of a task YAML), as `lm_eval.simple_evaluate` computes them. `limit` takes the first documents
    of the split, as the harness does; `num_fewshot` None keeps the task's own default."""
    lm_eval, TaskManager = _import_harness_offline()
    if task_or_yaml.endswith((".yaml", ".yml")):
        path = Path(task_or_yaml).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"No task YAML at {path}; give the path of an existing file or a harness task name.")
        cfg = _read_task_yaml(path)
        # One task's YAML names no other task, so the harness's ~14,000 built-in configs (seconds to
        # index) are scanned only for a group or tag YAML that may name them.
        names_others = "group" in cfg or not isinstance(cfg.get("task"), str)
        manager = TaskManager(include_path=str(path.parent), include_defaults=names_others)
        spec = str(path)
    else:
        manager, spec = TaskManager(), task_or_yaml
    tasks = _load_tasks(manager, spec)
    results = lm_eval.simple_evaluate(model=AblabLM(model, tokenizer, batch_size), tasks=tasks,
                                      task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                                      log_samples=False)
    return _metric_table(results["results"])


def _builtin_task_yaml(task: str) -> Path:
    import lm_eval.tasks

    root = Path(lm_eval.tasks.__file__).parent
    # Most tasks live in a file named after them; the full scan is the fallback for the rest.
    for path in itertools.chain(root.rglob(f"{task}.yaml"), root.rglob("*.yaml")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if task in text and _read_task_yaml(path).get("task") == task:
            return path
    raise UserError(f"The installed harness has no YAML for task '{task}'; give a task name that "
                    "`lm_eval ls tasks` lists.")


def harness_yaml_for_local(task: str, data_files: dict[str, str], out: Path, **overrides) -> Path:
    """Write `out`, a task YAML that runs the installed harness's own `task` (its prompt template,
    choices, target and metrics, included from the harness's YAML) on local json/jsonl files:
    data_files maps a split name (as the task names its splits, e.g. "validation") to a file in the
    Hugging Face dataset's schema. Splits the task uses but data_files lacks are set to null.
    `overrides` are further keys of the YAML (e.g. task="piqa_local")."""
    import yaml

    _import_harness_offline()
    source = _builtin_task_yaml(task)
    files = {}
    for split, file in data_files.items():
        if not Path(file).is_file():
            raise UserError(f"No data file at {file} for split '{split}'; write the split there first.")
        files[split] = str(Path(file).resolve())
    original = _read_task_yaml(source)
    cfg = {"include": str(source), "task": task, "dataset_path": "json", "dataset_name": None,
           "dataset_kwargs": {"data_files": files}}
    cfg.update({key: None for key in _SPLIT_KEYS if original.get(key) and original[key] not in files})
    cfg.update(overrides)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return out
