"""The `ablab` command line: parse, call one library function, print. Nothing imports this module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ablab import config as config_mod
from ablab.cli import boundary
from ablab.cli.analysis import analysis_app
from ablab.cli.baseline import baseline_app
from ablab.cli.common import LabOpt, bounded, console, lab_dir
from ablab.cli.config import config_app
from ablab.cli.data import data_app
from ablab.cli.evals import evals_app
from ablab.cli.ideas import idea_app
from ablab.cli.log import log_app
from ablab.cli.profile import profile_app
from ablab.cli.progress import QuietOpt, run_bar, watching_preparation
from ablab.cli.report import report_app
from ablab.cli.runs import runs_app
from ablab.cli.study import study_app
from ablab.cli.ui import ui_app
from ablab.lab import check_output_path, init_lab

app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                  help="ablab: disciplined research on tiny language models.\n\n"
                       "Shell completion: `ablab --install-completion` (bash, zsh, fish or PowerShell; "
                       "`--show-completion` prints the script instead).\n\n"
                       "Example: `ablab run -c quickstart train.max_steps=200`")
app.add_typer(data_app, name="data")
app.add_typer(baseline_app, name="baseline")
app.add_typer(study_app, name="study")
app.add_typer(config_app, name="config")
app.add_typer(idea_app, name="idea")
app.add_typer(log_app, name="log")
app.add_typer(runs_app)  # no name: runs, show, diff, compare, note, tag are top-level commands
app.add_typer(evals_app)  # eval, export-hf
app.add_typer(analysis_app)  # correlate, scaling, ladder
app.add_typer(report_app)  # report
app.add_typer(profile_app)  # profile
app.add_typer(ui_app)  # ui
err_console = Console(stderr=True)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=boundary.print_version,
                                       help="Print ablab's version and exit.")) -> None:
    """ablab: disciplined research on tiny language models."""

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file or preset name (quickstart, small, medium, …).")
OverridesArg = typer.Argument(None, help="Overrides as section.key=value, e.g. model.d_model=256.", show_default=False)
LogToOpt = typer.Option("", "--log-to", help="Also mirror metrics to wandb, mlflow and/or tensorboard (comma-separated).")


@app.command()
def init(folder: Path = typer.Argument(Path("."), help="Where to create the lab."),
         examples: bool = typer.Option(True, help="Add the example baselines (cpu, plan) and studies.")) -> None:
    """Create a lab: ablab.toml, config.toml (the default config to edit), baselines/, studies/, reports/.

    Example: `ablab init my-lab && cd my-lab && ablab run -c config.toml`
    """
    created = init_lab(folder)
    config_file = folder / "config.toml"
    if not config_file.exists():
        config_file.write_text(config_mod.save_toml(config_mod.load("quickstart")), encoding="utf-8")
        created.append(config_file)
    if examples:
        from ablab.study.baselines import install_examples

        created += install_examples(folder)
    for path in created:
        console.print(f"created {path}")
    if not created:
        console.print(f"{folder} is already a lab; nothing changed.")


@app.command(context_settings={"allow_extra_args": False})
def run(overrides: Optional[List[str]] = OverridesArg, config: Optional[str] = ConfigOpt,
        name: str = typer.Option("", "--name", help="A name for the run (cosmetic)."),
        force: bool = typer.Option(False, "--force", help="Train even if an identical run already finished."),
        nproc: Optional[int] = typer.Option(None, "--nproc", callback=bounded(1, config_mod.MAXIMA["train.nproc"], 2),
                                            help="Data-parallel processes (train.nproc); "
                                            "data.batch_size must divide by it."),
        log_to: str = LogToOpt, quiet: bool = QuietOpt, lab: Optional[Path] = LabOpt) -> None:
    """Train one run of a config with overrides, and write its record under `.ablab/runs/<id>/`.

    A finished run with the same config, seed, data and code is reused instead (`--force` reruns).
    With `--nproc N` the run is trained by N processes (torchrun), each on 1/N of every batch.

    Example: `ablab run -c quickstart model.d_model=192 seed=1 --name wider`
    """
    from ablab.api import Lab
    from ablab.train import distributed

    changes = list(overrides or []) + ([f"name={name}"] if name else []) + \
        ([f"train.nproc={nproc}"] if nproc is not None else [])
    cfg = config_mod.load(config, changes)
    if cfg.train.nproc > 1 and not distributed.in_worker():
        raise typer.Exit(distributed.launch(cfg, sys.argv[1:]))
    console.print(f"config {config_mod.config_hash(cfg)}: {cfg.model.n_layers}L d{cfg.model.d_model} "
                  f"{cfg.model.n_heads}H ff{cfg.model.d_ff}, {cfg.optim.name}, corpus {cfg.data.corpus} "
                  f"({cfg.data.tokenizer}), {_per_step(cfg)}")
    for warning in config_mod.schedule_warnings(cfg, config_mod.budget_steps(cfg)) + _epoch_warnings(cfg):
        console.print(f"warning: {warning}", markup=False, soft_wrap=True)
    with run_bar(quiet, cfg) as show, watching_preparation(show.display):
        outcome = Lab(lab_dir(lab)).run(cfg, progress=show, force=force, log_to=log_to.split(","))
    if outcome.reused:
        console.print(f"reusing finished run {outcome.run_id}: same config, seed, data and code "
                      "(--force trains it again)")
    _report(outcome)


@app.command()
def resume(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
           nproc: Optional[int] = typer.Option(None, "--nproc", callback=bounded(1, config_mod.MAXIMA["train.nproc"], 2),
                                               help="Data-parallel processes (default: as "
                                               "the run was trained); data.batch_size must divide by it."),
           log_to: str = LogToOpt, quiet: bool = QuietOpt, lab: Optional[Path] = LabOpt) -> None:
    """Continue an interrupted run from its newest intact checkpoint, to the same result.

    A run trained with `--nproc N` resumes on N processes unless `--nproc` says otherwise.

    Example: `ablab resume 3f2a9c1d --nproc 2`
    """
    from ablab.api import Lab
    from ablab.store.record import RunRecord
    from ablab.train import distributed

    if not distributed.in_worker():
        record = RunRecord.open(lab_dir(lab), run_id)
        cfg = record.config()
        processes = nproc or cfg.train.nproc
        if processes > 1 and record.result().get("status") not in ("finished", "diverged"):
            record.hold()  # a run another process trains is refused here, in one sentence; rank 0 then holds it
            record.release()
            raise typer.Exit(distributed.launch(cfg, sys.argv[1:], processes, override=False))

    with run_bar(quiet, RunRecord.open(lab_dir(lab), run_id).config()) as show:
        outcome = Lab(lab_dir(lab)).resume(run_id, show, log_to=log_to.split(","))
    _report(outcome)


# Generating is a sequential forward pass per token: 10,000 takes about a minute for a small model
# on a CPU, and more is a slip (an extra digit) rather than a sample anyone reads.
SAMPLE_TOKENS_MAX = 10_000


@app.command()
def sample(run_id: str = typer.Argument(..., help="Run id."),
           prompt: str = typer.Option("\n", "--prompt", "-p", help="Text to continue."),
           tokens: int = typer.Option(300, callback=bounded(1, SAMPLE_TOKENS_MAX),
                                      help=f"Tokens to generate (at most {SAMPLE_TOKENS_MAX:,})."),
           temperature: float = typer.Option(0.8, callback=bounded(0, 100), help="0 = greedy."),
           top_k: int = typer.Option(50, callback=bounded(0), help="Sample among the k most likely tokens; 0 = all."),
           seed: int = typer.Option(0, callback=bounded(0, config_mod.SEED_LIMIT - 1), help="Sampling seed."),
           lab: Optional[Path] = LabOpt) -> None:
    """Generate text from a run's last checkpoint.

    Example: `ablab sample 3f2a9c1d --prompt "ROMEO:" --tokens 200`
    """
    from ablab.train.sampling import sample as sample_text

    console.print(sample_text(lab_dir(lab), run_id, prompt, tokens, temperature, top_k or None, seed), markup=False)


@app.command()
def preflight(overrides: Optional[List[str]] = OverridesArg, config: Optional[str] = ConfigOpt,
              steps: int = typer.Option(150, callback=bounded(1, 100_000), help="Steps on the single batch."),
              batch_size: int = typer.Option(4, callback=bounded(1, config_mod.MAXIMA["data.batch_size"]),
                                             help="Sequences in the batch."),
              target: float = typer.Option(0.1, callback=bounded(0),
                                           help="Pass when the final loss is at most this.")) -> None:
    """Overfit sanity check: train on one batch; pass when loss nears zero, no NaN, finite gradients.

    Example: `ablab preflight -c medium --steps 200`
    """
    from ablab.train.preflight import preflight as run_preflight

    r = run_preflight(config_mod.load(config, list(overrides or [])), steps, batch_size, target)
    verdict = "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]"
    console.print(f"preflight {verdict}: {r.steps} steps on one batch of {r.batch_size}x{r.seq_len} tokens; "
                  f"loss {r.initial_loss:.4f} -> {r.final_loss:.4f} (target <= {r.target}); "
                  f"max grad norm {r.max_grad_norm:.3g}; finite: {'yes' if r.finite else 'no'}")
    if not r.passed:
        raise typer.Exit(1)


@app.command()
def export(run_ids: Optional[List[str]] = typer.Argument(None, help="Runs to export (default: all)."),
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="Archive to write (default: <lab>-<date>.tar.gz)."),
           with_checkpoints: bool = typer.Option(False, "--with-checkpoints", help="Include checkpoints (large)."),
           lab: Optional[Path] = LabOpt) -> None:
    """Write runs into one .tar.gz: their directories plus their ledger rows (metrics, events, notes, tags).

    Example: `ablab export --out lab.tar.gz`
    """
    from ablab.store.archive import export_lab

    if out is not None:
        check_output_path(out)
    r = export_lab(lab_dir(lab), out, list(run_ids or []), with_checkpoints)
    console.print(f"exported {r.runs} runs to {r.path} ({r.bytes / 1e6:.1f} MB)")
    if r.without_directory:
        console.print(f"{len(r.without_directory)} runs had no directory; only their ledger rows went in: "
                      + ", ".join(r.without_directory))


@app.command("import")
def import_(sources: List[Path] = typer.Argument(..., help="Archives from `ablab export`, or run directories."),
            lab: Optional[Path] = LabOpt) -> None:
    """Bring runs into this lab from export archives or bare run directories; runs already here are skipped.

    Example: `ablab import lab.tar.gz other-machine/.ablab/runs/3f2a9c1d`
    """
    from ablab.store.archive import import_runs

    r = import_runs(lab_dir(lab), sources)
    console.print(f"imported {len(r.imported)} runs, {len(r.already_present)} already present")


@app.command()
def gc(dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be removed; remove nothing."),
       lab: Optional[Path] = LabOpt) -> None:
    """Delete the checkpoints of finished and diverged runs except each one's newest intact checkpoint.

    Running and interrupted runs keep all theirs (resuming needs them).

    Example: `ablab gc --dry-run`
    """
    from ablab.store.prune import prune_checkpoints

    r = prune_checkpoints(lab_dir(lab), dry_run)
    for run in r.runs:
        if run.removed or run.kept is None:
            kept = run.kept or "nothing: no intact checkpoint, so none removed"
            console.print(f"{run.run_id} {run.status}: {len(run.removed)} checkpoints, "
                          f"{run.bytes / 1e6:.1f} MB; keeps {kept}")
    verb = "would free" if dry_run else "freed"
    console.print(f"{verb} {r.bytes / 1e6:.1f} MB: {r.removed} checkpoints of {len(r.runs)} finished or diverged runs")


def _epoch_warnings(cfg) -> list[str]:
    """The epoch warning of `ablab run`, when the data's size is known without preparing it."""
    from ablab.data.prepare import data_size

    size = data_size(cfg.data)
    warning = config_mod.epoch_warning(cfg, size.n_train_tokens) if size is not None else None
    return [warning] if warning else []


def _per_step(cfg: config_mod.Config) -> str:
    """'4096 tokens/step', or how an "auto" batch leaves it until the probe has chosen."""
    if cfg.auto_batch and not (cfg.train.grad_accum == "auto" and cfg.train.global_batch_tokens):
        return "tokens/step as data.batch_size=auto chooses when the run starts"
    return f"{cfg.tokens_per_step} tokens/step" + (" (micro-batches chosen by auto)" if cfg.auto_batch else "")


def _budget_text(choice: dict) -> str:
    if choice.get("budget_mb") is None:
        return "not probed (data.batch_size was given)"
    return f"{choice['budget_mb']:,.0f} MB per process ({choice['budget_from']}), the chosen size used " \
           f"{choice['measured_mb']:,.0f} MB"


def _report(outcome) -> None:
    r, final = outcome.result, outcome.result.get("final", {})
    line = f"run {outcome.run_id} {outcome.status} after {r.get('steps')} steps, {r.get('tokens_seen'):,} tokens, " \
           f"{r.get('train_seconds', 0):.0f} s of training"
    console.print(line)
    if r.get("auto_batch"):
        console.print(f"auto batch: {r['batch_size']} sequences per micro-batch x {r['grad_accum']} micro-batches "
                      f"({r['tokens_per_step']:,} tokens/step); budget {_budget_text(r['auto_batch'])}", markup=False)
    if final.get("val_loss") is not None:
        console.print(f"final val loss {final['val_loss']:.4f} (perplexity {final['val_ppl']:.2f}, "
                      f"{final['val_bpb']:.3f} bits/byte); {final.get('tokens_per_s') or 0:,.0f} tokens/s, "
                      f"MFU {100 * (final.get('mfu') or 0):.1f}%, peak memory {final['peak_memory_mb']:.0f} MB")
    if outcome.status == "interrupted":
        console.print(f"resume it with: ablab resume {outcome.run_id}")
    if outcome.status == "diverged":
        console.print("the loss became NaN or inf; see events.jsonl in the run directory (lower optim.lr?)")
    if outcome.status != "finished":
        raise typer.Exit(130 if outcome.status == "interrupted" else 1)


def main() -> None:
    sys.exit(boundary.run(app))
