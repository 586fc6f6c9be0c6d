"""`ablab config show` and `ablab config keys`: parse, call ablab.config, print. Imported by cli only."""

from __future__ import annotations

from typing import List, Optional

import typer

from ablab import config as config_mod
from ablab import config_keys as keys_mod
from ablab.cli.common import console

config_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                         help="Configs: the resolved config of a file and overrides, and every key with its range."
                              "\n\nExample: `ablab config show -c small model.d_model=256`")


@config_app.command("show")
def config_show(overrides: Optional[List[str]] = typer.Argument(None, show_default=False,
                help="Overrides as section.key=value, e.g. model.d_model=256."),
                config: Optional[str] = typer.Option(None, "--config", "-c",
                help="TOML config file or preset name (default: the built-in defaults).")) -> None:
    """Print the config that `ablab run` would train, as TOML with each setting's meaning beside it.

    The output is itself a config file: save it, edit it, and pass it to `-c`.

    Example: `ablab config show -c quickstart model.d_model=192 > wider.toml`
    """
    cfg = config_mod.load(config, list(overrides or []))
    source = " ".join([f"-c {config}" if config else "the defaults", *(overrides or [])])
    header = f"ablab config from {source}; config hash {config_mod.config_hash(cfg)}"
    typer.echo(keys_mod.commented_toml(cfg, header), nl=False)


@config_app.command("keys")
def config_keys(json_out: bool = typer.Option(False, "--json", help="Print one JSON list (keys as listed above) "
                                              "and nothing else.")) -> None:
    """Every config key with its type, default, allowed range or choices, and meaning: the ranges are
    the ones every config is checked against. Cosmetic keys (marked *) leave the config hash alone.

    With `--json`: a list of objects with keys key, type (int, float, bool, str or choice), default,
    range (text such as "[1, 65,536]" or "> 0", or null), choices (a list, or null), cosmetic and comment.

    Example: `ablab config keys --json`
    """
    from rich.table import Table
    from rich.text import Text

    from ablab.analysis.runs import cell, to_json

    rows = keys_mod.describe_keys()
    if json_out:
        typer.echo(to_json(rows))
        return
    table = Table("key", "type", "default", "range or choices", "meaning")
    for row in rows:
        allowed = " | ".join(row["choices"]) if row["choices"] else row["range"] or ""
        default = repr(row["default"]) if isinstance(row["default"], str) else cell(row["key"], row["default"])
        table.add_row(row["key"] + (" *" if row["cosmetic"] else ""), row["type"], Text(default), Text(allowed),
                      Text(row["comment"]))
    console.print(table)
