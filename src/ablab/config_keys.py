"""What `ablab config show` and `ablab config keys` print: each setting's comment (the trailing
`# ...` of its field in ablab.config's dataclasses, the one description of it), its type, default
and range (ablab.config.RANGES, what validate() checks). Knows nothing of torch."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import tokenize
import types
import typing
from typing import Any, Literal

import tomlkit

from ablab.config import RANGES, SECTION_TYPES, Config, cosmetic_keys, flatten, inline, to_dict
from ablab.config_checks import TOKENIZERS


@functools.cache
def field_comments() -> dict[str, str]:
    """Dotted key -> the trailing `# ...` comment of its field in ablab.config's dataclasses, read once
    from this module's source: those comments are the one description of each setting."""
    found: dict[str, str] = {}
    for prefix, cls in (("", Config), *((f"{section}.", cls) for section, cls in SECTION_TYPES.items())):
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):  # no source shipped: keys are listed without their comments
            continue
        field_at_line: dict[int, str] = {}
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            row, column = token.start
            if token.type == tokenize.NAME and column == 4 and token.string in names and row not in field_at_line:
                field_at_line[row] = token.string  # a field's line: its name is the first word of the class body
            elif token.type == tokenize.COMMENT and row in field_at_line:
                found[prefix + field_at_line[row]] = token.string.lstrip("#").strip()
    return found


def key_type(key: str) -> Any:
    """The type annotation of a dotted config key (int, float, bool, str or a Literal of choices)."""
    section, _, name = key.rpartition(".")
    return typing.get_type_hints(SECTION_TYPES[section] if section else Config)[name]


def describe_keys() -> list[dict[str, Any]]:
    """Every config key with its type, default, range (from RANGES, what validate() checks) or
    choices, whether it is cosmetic, and its comment, in config order."""
    comments, cosmetic_set = field_comments(), cosmetic_keys()
    rows = []
    for key, default in flatten(Config()).items():
        typ = key_type(key)
        choices = list(typing.get_args(typ)) if typing.get_origin(typ) is Literal else None
        allowed = RANGES.get(key)
        shown = allowed.text() if allowed else None
        if typ is float:
            shown = f"finite, {shown}" if shown else "finite"
        if key == "data.tokenizer":  # a string checked by validate(): the kinds, or hf: and a file or id
            choices = list(TOKENIZERS)
        rows.append({"key": key, "type": "choice" if choices else _type_label(typ), "default": default,
                     "range": shown, "choices": choices, "cosmetic": key in cosmetic_set,
                     "comment": comments.get(key, "")})
    return rows


def _type_label(typ: Any) -> str:
    """int, float, bool, str, or for data.corpus (a name or a mixture's table) 'str or table'."""
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        return " or ".join(_type_label(part) for part in typing.get_args(typ))
    if typing.get_origin(typ) is dict:
        return "table"
    if typing.get_origin(typ) is Literal:  # data.batch_size's "auto" beside its int
        return " or ".join(map(repr, typing.get_args(typ)))
    return typ.__name__


def commented_toml(cfg: Config, header: str = "") -> str:
    """The config as TOML, each setting with its field comment beside it (comments aligned within
    a table), below `header` (comment lines). It loads back to the same config."""
    comments = field_comments()
    doc = tomlkit.document()
    for line in header.splitlines():
        doc.add(tomlkit.comment(line))
    values = to_dict(cfg)
    top = {key: value for key, value in values.items() if not isinstance(value, dict)}
    for key, item in _commented_items(top, "", comments):
        doc.add(key, item)
    for section, settings in values.items():
        if isinstance(settings, dict):
            table = tomlkit.table()
            for key, item in _commented_items(settings, f"{section}.", comments):
                table.add(key, item)
            doc.add(section, table)
    return tomlkit.dumps(doc)


def _commented_items(values: dict[str, Any], prefix: str, comments: dict[str, str]) -> list[tuple[str, Any]]:
    items = [(key, inline(value) if isinstance(value, dict) else tomlkit.item(value)) for key, value in values.items()]
    width = max((len(f"{key} = {item.as_string()}") for key, item in items), default=0)
    for key, item in items:
        if comments.get(prefix + key):
            item.comment(comments[prefix + key])
            item.trivia.comment_ws = " " * (width - len(f"{key} = {item.as_string()}") + 2)
    return items
