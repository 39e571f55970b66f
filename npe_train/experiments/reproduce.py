"""``npe reproduce TABLE``: a results table as a file, run through the sweep and written as Markdown and CSV.

A table is a TOML file (shipped ones: ``npe_train/tables/``; docs/baselines.md):

    title = "..."
    seeds = [0, 1, 2]
    [base]                      # settings every row shares (TrainConfig keys; ``config`` names a recipe)
    dataset = "digits100"
    [[row]]
    name = "LDAM-DRW"           # the row's label and run-folder prefix
    method = "ldam_drw"         # the row's own settings
    published = 42.0            # optional: a published top-1 (%), shown beside ours, never as ours
    source = "Cao et al. 2019, Table 2"

Each (row, seed) is one run folder ``OUT/<row>-seed<s>``; finished runs are skipped and killed ones resumed
(``sweep.run_grid``). Imports: ``run/``, ``tasks/rules.py`` and ``sweep.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npe_theory.errors import InputError
from npe_theory.io import atomic_write, read_toml_table, write_csv

from ..data.catalog import dataset
from ..run.config import TrainConfig, make_config
from ..tasks.rules import GROUPS, INDEX_GROUPS

TABLES = "tables"  # package data of npe_train: the shipped tables
SHOWN_RULES = ("argmax", "posthoc_la", "npe_la", "npe_inverse")
INDEX_PARTS = ("head", "medium", "tail")
ROW_KEYS = {"name", "published", "source"}


@dataclass(frozen=True)
class Row:
    name: str
    settings: dict
    published: float | None = None
    source: str | None = None


@dataclass(frozen=True)
class Table:
    title: str
    seeds: tuple[int, ...]
    base: dict
    rows: tuple[Row, ...] = field(default_factory=tuple)


def shipped_tables() -> dict[str, Path]:
    from importlib.resources import files

    folder = Path(str(files("npe_train") / TABLES))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def load_table(name_or_path) -> Table:
    """A table from a TOML file, or the shipped table of that name; unknown keys and bad rows are InputErrors."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = shipped_tables()
        if path.stem not in shipped:
            raise InputError(
                f"TABLE: {name_or_path} is neither a file nor a shipped table ({', '.join(shipped)})"
            )
        path = shipped[path.stem]
    raw = read_toml_table(path, "TABLE", None)
    unknown = sorted(set(raw) - {"title", "seeds", "base", "row"})
    if unknown:
        raise InputError(f"TABLE: {path}: unknown key(s) {', '.join(unknown)}")
    rows = raw.get("row")
    if not isinstance(rows, list) or not rows:
        raise InputError(f"TABLE: {path}: no [[row]] entries")
    out = []
    for i, r in enumerate(rows):
        if (
            not isinstance(r, dict)
            or not isinstance(r.get("name"), str)
            or not re.fullmatch(r"[\w.+-]+", r["name"])
        ):
            raise InputError(
                f"TABLE: {path}: row {i + 1} needs a name of letters, digits, '_', '.', '+' or '-'"
            )
        pub = r.get("published")
        if pub is not None and (isinstance(pub, bool) or not isinstance(pub, (int, float))):
            raise InputError(f"TABLE: {path}: row {r['name']}: published must be a number (top-1 in %)")
        out.append(Row(r["name"], {k: v for k, v in r.items() if k not in ROW_KEYS}, pub, r.get("source")))
    if len({r.name for r in out}) != len(out):
        raise InputError(f"TABLE: {path}: two rows share a name")
    seeds = raw.get("seeds", [0, 1, 2])
    if (
        not isinstance(seeds, list)
        or not seeds
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
    ):
        raise InputError(f"TABLE: {path}: seeds must be a list of integers >= 0")
    base = raw.get("base", {})
    if not isinstance(base, dict):
        raise InputError(f"TABLE: {path}: [base] must be a table of settings")
    return Table(str(raw.get("title", path.stem)), tuple(dict.fromkeys(seeds)), base, tuple(out))


def plan(table: Table, out: Path, overrides: dict | None = None) -> list[tuple[Row, TrainConfig]]:
    """(row, resolved config) of every run, in table order; ``overrides`` (the device) apply to all, the data folder
    (``data_dir``) to the rows whose data set reads one (a CPU row of a mixed table generates its data). A data folder
    that no row reads is refused, not ignored."""
    overrides = dict(overrides or {})
    folder = overrides.pop("data_dir", None)
    runs, read = [], False
    for row in table.rows:
        merged = {**table.base, **row.settings}
        recipe = merged.pop("config", None)  # a shipped recipe or settings file under the row's own settings
        for seed in table.seeds:
            settings = {**merged, **overrides, "seed": seed, "out": str(out / f"{row.name}-seed{seed}")}
            try:
                cfg = make_config(recipe, **settings)
                if folder is not None and "data_dir" in dataset(cfg.dataset).reads:
                    cfg, read = make_config(recipe, **settings, data_dir=folder), True
            except InputError as exc:
                raise InputError(f"TABLE: row {row.name}: {exc}") from None
            runs.append((row, cfg))
    if folder is not None and not read:
        raise InputError(
            f"data_dir: no row of {table.title} reads a data folder (its data sets generate their data)"
        )
    return runs


def summarize_rows(table: Table, runs: list[tuple[Row, TrainConfig]], results: list[dict]) -> list[dict]:
    """One line per row: mean and std over seeds of every shown rule's accuracy, overall and by count group."""
    lines = []
    for row in table.rows:
        rs = [res for (r, _), res in zip(runs, results) if r.name == row.name]
        line = {
            "row": row.name,
            "method": rs[0]["config"]["method"],
            "dataset": rs[0]["config"]["dataset"],
            "seeds": len(rs),
            "published": row.published,
            "source": row.source,
        }
        for rule in SHOWN_RULES:
            for g in ("overall", *GROUPS):
                vals = [res["accuracy"].get(rule, {}).get(g) for res in rs]
                ok = [v for v in vals if v is not None]
                line[f"{rule}_{g}_mean"] = float(np.mean(ok)) if len(ok) == len(vals) else None
                line[f"{rule}_{g}_std"] = (
                    float(np.std(ok, ddof=1)) if len(ok) == len(vals) and len(ok) > 1 else None
                )
            for (
                source
            ) in INDEX_GROUPS:  # head / medium / tail by class index, as the official codes group CIFAR-LT
                for part in INDEX_PARTS:
                    vals = [
                        res.get("accuracy_by_index", {}).get(source, {}).get(rule, {}).get(part) for res in rs
                    ]
                    full = all(v is not None for v in vals)
                    line[f"{rule}_{source}_{part}_mean"] = float(np.mean(vals)) if full else None
                    line[f"{rule}_{source}_{part}_std"] = (
                        float(np.std(vals, ddof=1)) if full and len(vals) > 1 else None
                    )
        lines.append(line)
    return lines


def write_table(table: Table, lines: list[dict], out: Path) -> tuple[Path, Path]:
    """table.csv (every mean and std) and table.md (mean ± std in %, the published number beside)."""
    csv_path = write_csv(out / "table.csv", lines)

    def cell(line, key):
        m, s = line[f"{key}_mean"], line[f"{key}_std"]
        return "-" if m is None else f"{100 * m:.1f}" + ("" if s is None else f" ± {100 * s:.1f}")

    head = (
        ["row", "method", "seeds"] + [f"{r} overall" for r in SHOWN_RULES] + [f"npe_la {g}" for g in GROUPS]
    )
    by_index = any(line.get("npe_la_npe_official_head_mean") is not None for line in lines)
    if by_index:  # CIFAR-LT's class order: the NPE code's index groups beside the count groups
        head += [f"npe_la {p} (NPE code's index groups)" for p in INDEX_PARTS]
    head += ["published (not ours)", "source"]
    md = [f"# {table.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in lines:
        cells = [line["row"], line["method"], str(line["seeds"])] + [
            cell(line, f"{r}_overall") for r in SHOWN_RULES
        ]
        cells += [cell(line, f"npe_la_{g}") for g in GROUPS]
        if by_index:
            cells += [cell(line, f"npe_la_npe_official_{p}") for p in INDEX_PARTS]
        cells += ["-" if line["published"] is None else f"{line['published']:g}", line["source"] or "-"]
        md.append("| " + " | ".join(cells) + " |")
    md_path = out / "table.md"
    atomic_write(md_path, lambda tmp: tmp.write_text("\n".join(md) + "\n"))
    return csv_path, md_path
