"""`ablab data list` and `ablab data prepare`: parse, call ablab.data, print. Imported by cli.main only."""

from __future__ import annotations

import typer
from rich.table import Table

from ablab import config as config_mod
from ablab.cli.common import bounded, console
from ablab.cli.progress import Display, QuietOpt, watching_preparation

data_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                       help="List and prepare corpora.\n\nExample: `ablab data list`, `ablab data prepare tinystories`")


@data_app.command("list")
def data_list() -> None:
    """Show every registered corpus: what it is, its source, size and license, and where it would be
    found now (ABLAB_DATA, bundled, cache, or a download on first use).

    Example: `ablab data list`
    """
    from ablab.data.registry import CORPORA
    from ablab.data.sources import where_local

    table = Table(show_lines=False)
    for column in ("name", "about", "source", "size", "license", "local?"):
        table.add_column(column, overflow="fold")
    for spec in CORPORA.values():
        found = where_local(spec)
        size = spec.size_bytes
        if size is None and found is not None:
            size = sum(record["size"] for record in found.files)
        table.add_row(spec.name, spec.about, spec.origin, _size(size) if size is not None else "known once fetched",
                      spec.license, found.source if found is not None else _fetchable(spec))
    console.print(table)
    console.print("A corpus is found in $ABLAB_DATA/<folder>/ first, then bundled, then in the cache "
                  "($ABLAB_CACHE); else it is downloaded on first use (ABLAB_MIRROR or HF_ENDPOINT for another host).")


def _fetchable(spec) -> str:
    """"download" when every file has an origin; else only a local copy (or a mirror) can supply it."""
    return "download" if all(f.url or f.repo for f in spec.files) else "no: set ABLAB_DATA"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@data_app.command("prepare")
def data_prepare(corpus: str = typer.Argument(..., help="Corpus name or path (.txt, a folder, .jsonl(.gz/.zst), .parquet)."),
                 tokenizer: str = typer.Option("char", help="char, byte, bpe or hf:PATH_OR_ID (a tokenizer.json)."),
                 shards: int = typer.Option(0, callback=bounded(0, 10_000),
                                            help="Shard files of a sharded corpus (0: its default)."),
                 vocab_size: int = typer.Option(4096, callback=bounded(257, 1_000_000), help="BPE vocabulary size."),
                 seq_len: int = typer.Option(256, callback=bounded(1, config_mod.MAXIMA["data.seq_len"]),
                                             help="Only checked: both splits must hold a sequence."),
                 quiet: bool = QuietOpt) -> None:
    """Resolve, download if needed, tokenize and cache a corpus; print its fingerprint.

    Example: `ablab data prepare wikitext-2 --tokenizer bpe --vocab-size 8192`
    """
    from ablab.data.prepare import prepare_data
    from ablab.data.sampler import BatchSampler, val_batches

    cfg = config_mod.load(None, [f"data.corpus={corpus}", f"data.tokenizer={tokenizer}",
                                 f"data.vocab_size={vocab_size}", f"data.seq_len={seq_len}",
                                 f"data.shards={shards}"])
    with Display(quiet) as display, watching_preparation(display):
        prepared = prepare_data(cfg.data)
    BatchSampler(prepared.train, seq_len, 1, 0), val_batches(prepared.val, seq_len, seq_len, 1)  # each split holds one
    for key in ("corpus", "source", "split", "n_train_tokens", "n_train_documents", "n_val_tokens", "val_bytes"):
        console.print(f"{key:>17}: {prepared.meta.get(key)}")
    console.print(f"{'vocab_size':>17}: {prepared.tokenizer.vocab_size}")
    console.print(f"{'fingerprint':>17}: {prepared.fingerprint}")
    console.print(f"{'cache':>17}: {prepared.dir}")
    for record in prepared.meta.get("files") or []:
        revision = f" @ {record['revision']}" if record.get("revision") else ""
        console.print(f"{'file':>17}: {record['name']}{revision} sha256 {record.get('sha256') or 'not computed'}")
