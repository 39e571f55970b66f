"""The import graph of ``npe``, ``npe_theory`` and ``npe_train`` (docs/architecture.md): no cycle, no arrow up.

Every import statement counts, at module level or inside a function: a lazy import is still a dependency.
The checker is tested on small made-up packages first, so a checker that finds nothing would fail here.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("npe", "npe_theory", "npe_train")
# bottom to top; a module may import its own folder and any folder of a lower level, nothing else of ours
LEVELS = {
    "npe_theory": 0,
    "npe_train.data": 1,
    "npe_train.models": 1,
    "npe_train.device": 1,
    "npe_train.methods": 2,
    "npe_train.tasks": 3,
    "npe_train.run": 4,
    "npe_train.loop": 5,
    "npe_train.experiments": 6,
    "npe_train": 7,  # the package itself (its public names) and cli.py, the top of the library
    "npe": 8,
}


def read_sources(root: Path = ROOT) -> dict[str, str]:
    """{dotted module name: source} of every module of the three packages."""
    out = {}
    for pkg in PACKAGES:
        for path in (root / pkg).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path.read_text()
    return out


def _is_package(name: str, sources: dict[str, str]) -> bool:
    return any(m.startswith(name + ".") for m in sources)


def imports_of(name: str, source: str, sources: dict[str, str]) -> set[str]:
    """The modules of ours that ``name`` imports (relative imports resolved; ``from pkg import sub`` names the submodule)."""
    package = name if _is_package(name, sources) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in sources else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in sources:  # a name inside a module: the module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph(sources: dict[str, str]) -> dict[str, set[str]]:
    return {name: imports_of(name, src, sources) for name, src in sources.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def folder_of(module: str) -> str:
    """The longest key of LEVELS that ``module`` lies in (``npe_train.cli`` -> ``npe_train``)."""
    return max((k for k in LEVELS if module == k or module.startswith(k + ".")), key=len)


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Imports into a higher level, or sideways into another folder of the same level."""
    bad = []
    for src, targets in edges.items():
        a = folder_of(src)
        for t in targets:
            b = folder_of(t)
            if b != a and LEVELS[b] >= LEVELS[a]:
                bad.append(f"{src} -> {t}")
    return sorted(bad)


# ---- the checker on made-up packages: it must find what is planted ----

FAKE = {
    "npe_train": "",
    "npe_train.loop": "",
    "npe_train.tasks": "",
    "npe_train.data": "",
    "npe_train.models": "",
    "npe_train.loop.train": "from ..tasks.rules import RULES\n",
    "npe_train.tasks.rules": "def f():\n    from npe_train.loop import train\n",  # a lazy import back up: a cycle and an arrow up
    "npe_train.data.files": "from . import longtail\n",
    "npe_train.data.longtail": "from .files import read\nfrom ..models.pem import X\n",  # a cycle in a folder; sideways
    "npe_train.models.pem": "import numpy\n",
}


def test_checker_finds_planted_cycles_and_arrows():
    edges = graph(FAKE)
    assert edges["npe_train.data.files"] == {"npe_train.data.longtail"}
    assert edges["npe_train.tasks.rules"] == {"npe_train.loop.train"}
    found = cycles(edges)
    assert ["npe_train.data.files", "npe_train.data.longtail"] in found
    assert ["npe_train.loop.train", "npe_train.tasks.rules"] in found
    assert upward(edges) == [
        "npe_train.data.longtail -> npe_train.models.pem",
        "npe_train.tasks.rules -> npe_train.loop.train",
    ]


# ---- the real packages ----

SOURCES = read_sources()
EDGES = graph(SOURCES)


def test_every_module_has_a_level():
    assert {folder_of(m) for m in SOURCES} <= set(LEVELS)
    assert len(SOURCES) > 40 and sum(len(t) for t in EDGES.values()) > 60  # the walk saw the packages


def test_no_import_cycle():
    assert cycles(EDGES) == []


def test_no_import_from_a_layer_above_or_beside():
    assert upward(EDGES) == []


def test_the_loop_asks_no_task_method_or_data_set_name():
    """The loop's modules hold no data-set or method names and no dense/mixing branch: the task, mixing and
    objective objects supply what differs (docs/architecture.md)."""
    from npe_train.data.catalog import DATASETS
    from npe_train.data.segmentation import IGNORE
    from npe_train.methods.catalog import METHODS

    for name in ("npe_train.loop.train", "npe_train.loop.step"):
        src = SOURCES[name]
        tree = ast.parse(src)
        strings = {
            n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        assert not strings & {*DATASETS, *METHODS, "unimix", "segmentation", "classification"}, name
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
        }
        banned = {"IGNORE", "dense", "mix", "method", "dataset", "shift", "pixel_features"}
        assert not names & banned, (name, names & banned)
        assert str(IGNORE) not in src


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("npe_train")))
def test_each_module_says_what_it_may_import(module):
    src = SOURCES[module]
    doc = ast.get_docstring(ast.parse(src)) or ""
    assert doc, f"{module} has no docstring saying what it holds"
    if (
        module.count(".") >= 2 or module == "npe_train.cli"
    ):  # modules (packages' __init__ say it for their folder)
        assert "import" in doc.lower(), f"{module}: its docstring does not say what it may import"


MAX_FUNCTION_LINES = (
    200  # formatted lines; the two longest (ufm.simulate_ufm, TrainConfig.validate) are near it
)
MAX_PARAMETERS = 12  # beyond this a settings dataclass says more (ufm.UFMSettings, loop.step.StepContext)
MAX_LOOP_ARGS = 8  # the training loop passes objects, not positional plumbing


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_functions_are_short_and_take_few_parameters(module):
    for fn in _functions(ast.parse(SOURCES[module])):
        a = fn.args
        params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
        assert fn.end_lineno - fn.lineno + 1 <= MAX_FUNCTION_LINES, (
            f"{module}.{fn.name}: {fn.end_lineno - fn.lineno + 1} lines"
        )
        assert params <= MAX_PARAMETERS, f"{module}.{fn.name}: {params} parameters"


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("npe_train.loop")))
def test_the_loop_passes_objects_not_long_argument_lists(module):
    tree = ast.parse(SOURCES[module])
    for fn in _functions(tree):
        a = fn.args
        assert len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) <= MAX_LOOP_ARGS, f"{module}.{fn.name}"
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        assert len(call.args) <= MAX_LOOP_ARGS, (
            f"{module}:{call.lineno}: {len(call.args)} positional arguments"
        )


def test_the_size_checks_can_fail():
    """The function checks see a planted long function and a call with many positional arguments."""
    long = "def f(a, b, c, d, e, f, g, h, i, j, k, l, m):\n" + "    x = 1\n" * 200
    fn = _functions(ast.parse(long))[0]
    assert fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES and len(fn.args.args) > MAX_PARAMETERS
    call = next(n for n in ast.walk(ast.parse("g(1, 2, 3, 4, 5, 6, 7, 8, 9)")) if isinstance(n, ast.Call))
    assert len(call.args) > MAX_LOOP_ARGS
