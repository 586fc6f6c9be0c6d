import json
import re

import pytest
import typer.main

from ablab.cli.main import app

from conftest import TINY, run_cli


def all_commands():
    group = typer.main.get_command(app)
    stack = [((), group)]
    while stack:
        path, command = stack.pop()
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            stack.append(((*path, name), sub))


def test_every_command_has_help_with_an_example():
    from typer.testing import CliRunner

    paths = [path for path, _ in all_commands()]
    assert len(paths) >= 8
    for path in paths:
        text = CliRunner().invoke(app, [*path, "--help"], terminal_width=120).output
        assert re.search(r"Example: +ablab ", text), f"`ablab {' '.join(path)} --help` has no example:\n{text}"


def test_help_runs_from_the_command_line(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for name in ("init", "data", "run", "resume", "sample", "preflight"):
        assert name in result.stdout


def one_clear_sentence(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["model.n_layer=3"], "Did you mean 'model.n_layers'"),
    (["model.d_model=big"], "model.d_model must be an integer"),
    (["model.n_heads=5"], "not divisible"),
    (["data.corpus=/no/such/file.txt"], "/no/such/file.txt"),
    (["data.corpus=tiny-shakspeare"], "tiny-shakespeare"),
    (["-c", "nonexistent.toml"], "neither a file nor a preset"),
])
def test_bad_run_inputs_exit_2_with_one_sentence(tmp_path, args, words):
    line = one_clear_sentence(run_cli("run", *args, cwd=tmp_path))
    assert words in line


@pytest.mark.parametrize("content", [b"", b"   \n\t\n", b"caf\xe9 au lait\n" * 50])
def test_empty_or_non_utf8_corpus_exits_2(tmp_path, content):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    line = one_clear_sentence(run_cli("run", f"data.corpus={corpus}", cwd=tmp_path))
    assert "corpus.txt" in line
    assert not (tmp_path / ".ablab" / "runs").exists() or not any((tmp_path / ".ablab" / "runs").iterdir())


def test_unknown_run_id_exits_2(tmp_path):
    line = one_clear_sentence(run_cli("resume", "deadbeef", cwd=tmp_path))
    assert "deadbeef" in line


def test_init_run_sample_end_to_end(tmp_path):
    assert run_cli("init", "lab", cwd=tmp_path).returncode == 0
    lab = tmp_path / "lab"
    assert (lab / "ablab.toml").exists() and (lab / "config.toml").exists()
    result = run_cli("run", "-c", "config.toml", *TINY, "train.max_steps=40", "--name", "e2e", cwd=lab)
    assert result.returncode == 0, result.stderr
    match = re.search(r"run (\w+) finished after 40 steps", result.stdout)
    assert match and "final val loss" in result.stdout
    run_id = match.group(1)
    result_json = json.loads((lab / ".ablab" / "runs" / run_id / "result.json").read_text())
    assert result_json["name"] == "e2e" and result_json["status"] == "finished"
    text = run_cli("sample", run_id[:5], "--prompt", "ROMEO:", "--tokens", "30", cwd=lab)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("ROMEO:") and len(text.stdout.strip()) > len("ROMEO:") + 10


def test_preflight_passes_for_a_sound_model_and_fails_for_a_frozen_one(tmp_path):
    # 60 steps reach loss 0.007 on the batch (0.006 at 120), far under the pass mark of 0.1.
    ok = run_cli("preflight", *TINY, "--steps", "60", cwd=tmp_path)
    assert ok.returncode == 0 and "PASS" in ok.stdout, ok.stdout + ok.stderr
    frozen = run_cli("preflight", *TINY, "optim.lr=1e-9", "optim.adamw_lr=1e-9", "--steps", "20", cwd=tmp_path)
    assert frozen.returncode == 1 and "FAIL" in frozen.stdout
