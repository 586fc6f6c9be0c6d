"""Dated baselines: a named config fixed on a date, with its seeds, lineage and noise floor.

A baseline lives in `baselines/NAME@DATE.toml`: an ordinary config plus a `[baseline]` table (seeds,
the baseline it was promoted from, the studies that justified it). It is registered in the ledger,
which also keeps which baseline of a name is current and the measured seed-noise floor. A baseline
file is never rewritten: a change makes a new date, so old studies keep the baseline they used.
"""

from __future__ import annotations

import datetime
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablab import config as config_mod
from ablab.config import Config
from ablab.errors import UserError
from ablab.lab import lab_settings, read_user_text
from ablab.store.ledger import Ledger, Run, ledger_path

# NAME@DATE, or NAME@DATE/SIZE for one size of a two-size (or more) family.
REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)@(?P<date>\d{4}-\d{2}-\d{2})(?:/(?P<size>[A-Za-z0-9][A-Za-z0-9_.-]*))?$")


@dataclass
class Baseline:
    name: str
    date: str
    config: Config
    seeds: list[int]
    parent: str | None = None  # the baseline this one was promoted from
    justified_by: list[str] = field(default_factory=list)  # studies whose arm it adopted
    # The config keys its config file (or preset) and overrides set; every other key took the code's
    # default, which `baseline retrain` re-resolves. None: not known (an older baseline), so all count as set.
    set_keys: list[str] | None = None
    # A family's sizes: size name -> the dotted config changes that make that size (model dims). A
    # family is one file and one ledger entry; NAME@DATE/SIZE is one size, NAME@DATE all of them.
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)
    size: str | None = None  # set for one size of a family: its config is the family's plus sizes[size]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.date}" + (f"/{self.size}" if self.size else "")

    def members(self) -> list["Baseline"]:
        """Each size of a family as its own baseline (NAME@DATE/SIZE); a single baseline is its own."""
        if not self.sizes or self.size is not None:
            return [self]
        return [member(self, size) for size in self.sizes]


def parse_ref(ref: str) -> tuple[str, str]:
    match = REF.match(ref)
    if not match:
        raise UserError(f"'{ref}' is not a baseline reference; write NAME@YYYY-MM-DD, e.g. main@2026-11-21 "
                        "(or NAME@YYYY-MM-DD/SIZE for one size of a family).")
    return match["name"], match["date"]


def size_of(ref: str) -> str | None:
    """The SIZE of NAME@DATE/SIZE; None for NAME@DATE."""
    parse_ref(ref)
    return REF.match(ref)["size"]


def baseline_path(lab: Path, ref: str) -> Path:
    """The baseline's file; every size of a family is in the family's one file."""
    return lab / "baselines" / f"{ref.partition('/')[0]}.toml"


def member(family: Baseline, size: str) -> Baseline:
    """One size of a family: the family's config with that size's changes, as NAME@DATE/SIZE."""
    if size not in family.sizes:
        raise UserError(f"Baseline {family.ref} has no size '{size}'"
                        + (f"; its sizes are {', '.join(family.sizes)}." if family.sizes else "; it is a single size."))
    cfg = config_mod.replace(family.config, family.sizes[size])
    set_keys = None if family.set_keys is None else sorted(set(family.set_keys) | set(family.sizes[size]))
    return Baseline(family.name, family.date, cfg, family.seeds, family.parent, family.justified_by, set_keys,
                    family.sizes, size)


def to_toml(baseline: Baseline) -> str:
    meta = {"name": baseline.name, "date": baseline.date, "seeds": baseline.seeds}
    meta |= {key: value for key, value in (("parent", baseline.parent), ("justified_by", baseline.justified_by))
             if value}
    meta |= {"set_keys": sorted(baseline.set_keys)} if baseline.set_keys is not None else {}
    meta |= {"sizes": baseline.sizes} if baseline.sizes else {}
    header = f"Baseline {baseline.ref}. Never edit a dated baseline: promote a new one instead."
    return config_mod.dump_toml(config_mod.to_dict(baseline.config) | {"baseline": meta}, header=header)


def load(lab: Path, ref: str) -> Baseline:
    """The baseline NAME@DATE (a family: all its sizes) or NAME@DATE/SIZE (one size) of this lab, or
    a UserError naming the ones that exist."""
    name, date = parse_ref(ref)
    size = size_of(ref)
    path = baseline_path(lab, ref)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (lab / "baselines").glob("*@*.toml"))) or "none yet"
        raise UserError(f"Unknown baseline {ref} (known: {known}); create it with `ablab baseline new {name} -c CONFIG`.")
    try:
        raw = tomllib.loads(read_user_text(path, "baseline file"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path} is not valid TOML ({err}); fix the line it names.") from None
    meta = raw.pop("baseline", {})
    cfg = config_mod.from_dict(raw, where=str(path))
    set_keys = meta.get("set_keys")
    found = Baseline(name, date, cfg, [int(s) for s in meta.get("seeds", [0])], meta.get("parent"),
                     list(meta.get("justified_by", [])), None if set_keys is None else [str(k) for k in set_keys],
                     {str(k): dict(v) for k, v in meta.get("sizes", {}).items()})
    return found if size is None else member(found, size)


def create(lab: Path, baseline: Baseline) -> Path:
    """Write a new baseline file, register it in the ledger and make it the current one of its name."""
    if not baseline.seeds:
        raise UserError("A baseline needs at least one seed; pass --seeds 0,1,2.")
    problem = config_mod.seeds_problem(baseline.seeds)
    if problem:
        raise UserError(f"The seeds {baseline.seeds} of baseline {baseline.name} cannot be used: {problem}; "
                        "pass e.g. --seeds 0,1,2.")
    if baseline.size is not None:
        raise UserError(f"{baseline.ref} is one size of a family; create the family {baseline.ref.partition('/')[0]}.")
    baseline.members()  # every size's config is valid before anything is written
    path = baseline_path(lab, baseline.ref)
    if path.exists():
        raise UserError(f"Baseline {baseline.ref} already exists and dated baselines never change; "
                        "use another --date or promote a new one.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(baseline), encoding="utf-8")
    with Ledger(lab) as ledger:
        ledger.save_baseline(baseline.name, baseline.date, config_mod.to_dict(baseline.config), baseline.seeds,
                             {"parent": baseline.parent, "justified_by": baseline.justified_by}
                             | ({"sizes": list(baseline.sizes)} if baseline.sizes else {}))
        ledger.set_current_baseline(baseline.name, baseline.date)
    return path


EXAMPLES = Path(__file__).parents[1] / "examples"  # src/ablab/examples


def install_examples(lab: Path) -> list[Path]:
    """Copy the shipped example baselines (registered in the ledger) and studies into a lab,
    never overwriting a file that is there."""
    created = []
    for file in sorted((EXAMPLES / "baselines").glob("*.toml")):
        if not baseline_path(lab, file.stem).exists():
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
            meta = raw.pop("baseline")
            created.append(create(lab, Baseline(meta["name"], meta["date"], config_mod.from_dict(raw, str(file)),
                                                list(meta["seeds"]))))
    for file in sorted((EXAMPLES / "studies").glob("*.toml")):
        target = lab / "studies" / file.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.read_text(encoding="utf-8"), encoding="utf-8")
            created.append(target)
    return created


def today() -> str:
    return datetime.date.today().isoformat()


def check_date(date: str) -> str:
    try:
        datetime.date.fromisoformat(date)
    except ValueError:
        raise UserError(f"--date {date!r} is not a date; write YYYY-MM-DD.") from None
    return date


FLOOR_METRICS = ("val_loss", "val_bpb", "train_loss", "tokens_per_s", "peak_memory_mb")


def seed_runs(ledger: Ledger, cfg: Config, seeds: list[int]) -> dict[int, Run]:
    """Per seed, the newest finished run of `cfg` at that seed, whichever study or command trained it
    (matched by config hash, so a budget spelled in tokens or in steps finds the same runs)."""
    seed_of = {config_mod.config_hash(config_mod.replace(cfg, {"seed": seed})): seed for seed in seeds}
    return {seed_of[run.config_hash]: run for run in ledger.finished_with_hashes(list(seed_of))}  # newest wins


def noise_floor(ledger: Ledger, cfg: Config, seeds: list[int]) -> dict[str, Any]:
    """The seed-noise floor of a baseline from the finished runs of its seeds that exist now: the
    standard deviation over seeds of each final metric (nan below two seeds), and how many seeds."""
    from ablab.analysis import stats  # here: the command line imports this module, and stats loads scipy

    finals = [run.final for run in seed_runs(ledger, cfg, seeds).values()]
    floor = {key: stats.noise_floor([f[key] for f in finals if f.get(key) is not None]) for key in FLOOR_METRICS}
    return {"noise_floor": floor, "finished_seeds": len(finals)}


def listing(lab: Path) -> list[dict[str, Any]]:
    """Every baseline of the lab: ref, seeds, current flag, parent, justified_by, and its noise floor
    measured from the runs of its seeds that exist now (None where no seed has finished). The floor
    stored by an older ablab, whose runs hashed otherwise, stands while it rests on more seeds. A
    folder with no ledger has none, and gets no ledger from being asked."""
    if not ledger_path(lab).exists():
        return []
    with Ledger(lab) as ledger:
        found = _with_sizes(lab, ledger.baselines())
        for b in found:
            measured = noise_floor(ledger, config_mod.from_dict(b["config"], b["ref"]), b["seeds"])
            b.setdefault("noise_floor", None)
            b.setdefault("finished_seeds", 0)
            if measured["finished_seeds"] >= b["finished_seeds"]:
                b |= measured if measured["finished_seeds"] else {"noise_floor": None}
    return found


def _with_sizes(lab: Path, rows: list[dict]) -> list[dict]:
    """The ledger's baselines with each family replaced by its sizes (NAME@DATE/SIZE, each with its
    own config and the noise floor stored for it), in the family's place."""
    out = []
    for row in rows:
        if not row.get("sizes"):
            out.append(row)
            continue
        family = load(lab, row["ref"])
        for size in family.members():
            stored = (row.get("size_floors") or {}).get(size.size, {})
            out.append({key: value for key, value in row.items() if key not in ("noise_floor", "finished_seeds")}
                       | stored | {"ref": size.ref, "size": size.size, "config": config_mod.to_dict(size.config)})
    return out


def resolve_sizes(lab: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Size name -> its config changes: the lab's ablab.toml [sizes.NAME] table (dotted keys, or
    [sizes.NAME.model] tables), else the model dims of the preset NAME (src/ablab/presets/NAME.toml)."""
    defined = lab_settings(lab).get("sizes", {})
    sizes: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in defined:
            table = defined[name]
            sizes[name] = {f"{k}.{sub}" if isinstance(v, dict) else k: w for k, v in table.items()
                           for sub, w in (v.items() if isinstance(v, dict) else [(None, v)])}
        elif (config_mod.PRESETS_DIR / f"{name}.toml").is_file():
            model = tomllib.loads((config_mod.PRESETS_DIR / f"{name}.toml").read_text(encoding="utf-8"))["model"]
            sizes[name] = {f"model.{key}": value for key, value in model.items()}
        else:
            presets = ", ".join(sorted(p.stem for p in config_mod.PRESETS_DIR.glob("*.toml")))
            raise UserError(f"Size '{name}' is neither a [sizes.{name}] table of the lab's ablab.toml nor a preset "
                            f"({presets}); define it there or pick a preset.")
    return sizes


def promote_arm(lab: Path, study: str, arm: str, date: str | None = None) -> tuple[Baseline, Baseline]:
    """(the previous baseline, the next one: it plus `arm`'s changes, justified by `study`), dated
    `date` (default today) and now current."""
    with Ledger(lab) as ledger:
        record = ledger.study(study)
    if record is None:
        raise UserError(f"No study '{study}' in this lab; run it first with `ablab study run FILE`.")
    arms = record["spec"]["arms"]
    if arm not in arms or arm == "baseline":
        raise UserError(f"Study {study} has no arm '{arm}'; choose one of: {', '.join(a for a in arms if a != 'baseline')}.")
    previous = load(lab, record["baseline"].partition("/")[0])  # one size's study promotes into its whole family
    return previous, promote(lab, previous, arms[arm], study, check_date(date) if date else today())


def promote(lab: Path, previous: Baseline, changes: dict[str, Any], study: str, date: str) -> Baseline:
    """The next dated baseline: `previous` plus an arm's changes, justified by `study`."""
    if date <= previous.date:
        raise UserError(f"A promoted baseline must be dated after {previous.ref}; pass --date later than {previous.date}.")
    cfg = config_mod.replace(previous.config, changes)
    set_keys = None if previous.set_keys is None else sorted(set(previous.set_keys) | set(changes))
    new = Baseline(previous.name, date, cfg, previous.seeds, previous.ref, [study], set_keys, previous.sizes)
    create(lab, new)
    return new


def set_keys_of(config: str | None, overrides: list[str]) -> list[str]:
    """The dotted keys a config file or preset (None: the defaults) and `key=value` overrides set,
    as `baseline new` records them: the rest is the code's defaults."""
    raw: dict[str, Any] = {}
    if config is not None:
        raw = tomllib.loads(config_mod.resolve_config_path(config).read_text(encoding="utf-8"))
    keys = {f"{section}.{key}" if isinstance(table, dict) else section
            for section, table in raw.items() for key in (table if isinstance(table, dict) else [None])}
    return sorted(keys | {config_mod.parse_override(item)[0] for item in overrides})


def current_config(baseline: Baseline) -> Config:
    """The baseline's config as the code now resolves it: the keys it set keep their values, every
    other key takes the current code's default (so a changed default is a config change of a
    retrained baseline, and shows in its diff and its drift)."""
    if baseline.set_keys is None:
        return baseline.config
    flat = config_mod.flatten(baseline.config)
    raw: dict[str, Any] = {section: {} for section in config_mod.SECTION_TYPES}
    for key in baseline.set_keys:
        section, _, name = key.rpartition(".")
        (raw[section] if section else raw)[name] = flat[key]
    return config_mod.from_dict(raw, where=f"baseline {baseline.ref}")
