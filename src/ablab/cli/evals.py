"""`ablab eval` and `ablab export-hf`: benchmarks on finished runs, and runs as Hugging Face checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from ablab.cli.common import LabOpt, bounded, console, lab_dir
from ablab.cli.progress import Display, ExampleBars, QuietOpt
from ablab.config import SEED_LIMIT
from ablab.lab import check_output_path

evals_app = typer.Typer()


@evals_app.command("eval")
def eval_run(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
             tasks: str = typer.Option("", "--tasks", "-t",
                                       help="Comma-separated tasks or suites (plan, choice), or .toml task files."),
             limit: int = typer.Option(0, callback=bounded(0, example=500),
                                       help="Examples per task, a subset drawn with --seed; 0 = all."),
             fewshot: int = typer.Option(0, callback=bounded(0, 100, 5), help="Solved examples before each prompt."),
             seed: int = typer.Option(0, callback=bounded(0, SEED_LIMIT - 1), help="Seeds the subset and the few-shot draws."),
             batch_size: int = typer.Option(16, callback=bounded(1, 1 << 16),
                                            help="Continuations scored per forward pass."),
             metric: Optional[str] = typer.Option(None, help="The multiple-choice metric reports read: acc, "
                                                             "acc_norm, acc_per_byte or acc_per_token "
                                                             "(default: each task's own)."),
             harness: Optional[str] = typer.Option(None, help="Run an lm-evaluation-harness task name or YAML "
                                                               "instead (the 'harness' extra)."),
             as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
             quiet: bool = QuietOpt, lab: Optional[Path] = LabOpt) -> None:
    """Score a run's newest checkpoint on benchmarks; results are stored with the run and in the ledger.

    Prints each task's score in the metric its reports read (multiple choice: acc, the summed
    log-likelihood; acc_norm, lm-eval's per character; acc_per_byte; acc_per_token) with its standard
    error, the other accuracies, the chance level computed from the data, the centred score
    (score - chance) / (1 - chance), their mean over tasks, and that mean per training hour and per
    million parameters.

    Example: `ablab eval 3f2a --tasks piqa,arc_easy,lambada --limit 500 --metric acc_per_byte`
    """
    if harness:
        _eval_harness(lab_dir(lab), run_id, harness, limit, fewshot, batch_size)
        return
    from ablab.evals.specfile import task_names
    from ablab.train.evaluate import evaluate_run

    def progress(task: str, result) -> None:
        if not as_json:
            console.print(f"  {task}: {result.n} examples scored", style="dim")

    with Display(quiet) as display:  # on stderr: --json keeps stdout one document
        report = evaluate_run(lab_dir(lab), run_id, task_names(tasks), limit or None, fewshot, seed, batch_size,
                              progress, metric=metric, examples=ExampleBars(display))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return
    _print_report(report)


def _print_report(report) -> None:
    console.print(f"run {report.run_id} at step {report.step}" +
                  (f", {report.limit} examples per task (seeded subset)" if report.limit else ""))
    header = (f"{'task':<14}{'v':>2}{'n':>7}  {'reads':<14}{'score':>7}{'± se':>8}{'acc':>8}{'acc_norm':>9}"
              f"{'per_byte':>9}{'per_token':>10}{'chance':>8}{'centred':>9}  other")
    console.print(header, markup=False, highlight=False, soft_wrap=True)
    for r in report.results:
        m = r.metrics
        other = "  ".join(f"{k} {m[k]:.4g}" for k in ("ppl", "f1", "f1_stderr") if k in m)
        if r.skipped:
            other += f"  skipped {r.skipped} (text its tokenizer cannot encode)"
        accuracies = "".join(f"{_num(m.get(k)):>{w}}" for k, w in
                             (("acc", 8), ("acc_norm", 9), ("acc_per_byte", 9), ("acc_per_token", 10)))
        score = f"{m[r.metric]:>7.4f}{m[r.metric + '_stderr']:>8.4f}"
        line = (f"{r.task:<14}{r.version:>2}{r.n:>7}  {r.metric:<14}{score}{accuracies}{m['chance']:>8.3f}"
                f"{m['centered']:>9.4f}  {other}")
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for task, reason in report.unmeasured.items():
        console.print(f"{task:<14} not measured: {reason}", markup=False, highlight=False, soft_wrap=True)
    agg = report.aggregate
    console.print(f"mean centred score over {agg['tasks']} tasks: {agg['centered']:.4f} ± {agg['centered_stderr']:.4f}")
    if report.per_hour is not None:
        console.print(f"per training hour: {report.per_hour:.4g} ({report.train_seconds:.0f} s of training)")
    if report.per_million_params is not None:
        console.print(f"per million parameters: {report.per_million_params:.4g} ({report.params:,} parameters)")


def _num(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _eval_harness(lab: Path, run_id: str, task: str, limit: int, fewshot: int, batch_size: int) -> None:
    from ablab.evals.harness import run_harness
    from ablab.train.sampling import load_run_model

    model, tokenizer, step = load_run_model(lab, run_id)
    results = run_harness(model, tokenizer, task, limit or None, fewshot or None, batch_size)
    console.print(f"lm-evaluation-harness on run {run_id} at step {step}")
    for name, metrics in results.items():
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        console.print(f"{name}: {shown}", markup=False, highlight=False, soft_wrap=True)


@evals_app.command("export-hf")
def export_hf(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
              out: Path = typer.Argument(..., help="Folder to write the checkpoint into."),
              lab: Optional[Path] = LabOpt) -> None:
    """Write a run as a Hugging Face transformers Llama checkpoint: config.json, model.safetensors
    and tokenizer files, loadable with AutoModelForCausalLM and AutoTokenizer.

    Only architectures that are Llama's (RMSNorm before each sublayer, RoPE, SwiGLU, no QK-norm)
    export; otherwise the error names the option that prevents it.

    Example: `ablab export-hf 3f2a exports/quickstart-llama`
    """
    from ablab.train.export_hf import export_run

    check_output_path(out, "OUT", folder=True)
    for path in export_run(lab_dir(lab), run_id, out):
        console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
