"""Nothing unsafe is loaded: the package source never unpickles, and the docs bind servers to localhost.

The scan walks the syntax tree of every ``.py`` file under ``src/`` and ``benchmarks/`` and fails
naming ``file:line`` for: ``torch.load`` without a literal ``weights_only=True``; ``pickle`` /
``cPickle`` / ``cloudpickle`` / ``dill`` / ``joblib`` / ``shelve`` / ``marshal`` loads (and any
import of ``dill``, ``cloudpickle`` or ``joblib``); ``pandas.read_pickle``; ``numpy.load`` with
``allow_pickle=True``; ``yaml.load`` without ``SafeLoader`` and ``yaml.unsafe_load``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

SCANNED = ("src", "benchmarks")
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
FORBIDDEN_IMPORTS = {"dill", "cloudpickle", "joblib"}
LOAD_NAMES = {"load", "loads", "Unpickler", "open"}


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for the expression ``torch.load`` (empty for anything not a plain name chain)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def unsafe_loads(source: str, filename: str) -> list[str]:
    """``filename:line: what`` for every unsafe load in ``source``."""
    tree = ast.parse(source, filename=filename)
    aliases: dict[str, str] = {}  # local name -> dotted origin ("tl" -> "torch.load")
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
                if alias.name.split(".")[0] in FORBIDDEN_IMPORTS:
                    found.append(f"{filename}:{node.lineno}: imports {alias.name} (it unpickles)")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if node.module.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(f"{filename}:{node.lineno}: imports from {node.module} (it unpickles)")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        name = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
        module, _, function = name.rpartition(".")
        where = f"{filename}:{node.lineno}"
        if name == "torch.load" and not _keyword_is(node, "weights_only", True):
            found.append(f"{where}: torch.load without weights_only=True")
        elif module.split(".")[0] in PICKLING_MODULES and function in LOAD_NAMES:
            found.append(f"{where}: {name} (unpickling)")
        elif function == "read_pickle" and module.split(".")[0] in {"pandas", "pd"}:
            found.append(f"{where}: {name} (unpickling)")
        elif name in {"numpy.load", "np.load"} and _keyword_is(node, "allow_pickle", True):
            found.append(f"{where}: {name} with allow_pickle=True")
        elif name == "yaml.unsafe_load" or (
            name == "yaml.load" and not any(k.arg == "Loader" and "Safe" in _dotted(k.value) for k in node.keywords)
        ):
            found.append(f"{where}: {name} without SafeLoader")
    return sorted(found)


def test_the_package_never_loads_unsafely() -> None:
    files = sorted(p for d in SCANNED for p in (PROJECT_ROOT / d).rglob("*.py"))
    assert len(files) > 40
    found = [hit for path in files for hit in unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(PROJECT_ROOT)))]
    assert found == [], "unsafe loads:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("code", "hit"),
    [
        ("import torch\nx = torch.load(p)\n", "x.py:2: torch.load without weights_only=True"),
        ("import torch\nx = torch.load(\n    p,\n    weights_only=False)\n", "x.py:2: torch.load without weights_only=True"),
        ("from torch import load as tl\nx = tl(p, map_location='cpu')\n", "x.py:2: torch.load without weights_only=True"),
        ("import pickle\nx = pickle.loads(b)\n", "x.py:2: pickle.loads (unpickling)"),
        ("import pickle as pk\nwith open(p, 'rb') as f:\n    x = pk.load(f)\n", "x.py:3: pickle.load (unpickling)"),
        ("import dill\n", "x.py:1: imports dill (it unpickles)"),
        ("from joblib import load\n", "x.py:1: imports from joblib (it unpickles)"),
        ("import pandas as pd\nx = pd.read_pickle(p)\n", "x.py:2: pandas.read_pickle (unpickling)"),
        ("import numpy as np\nx = np.load(p, allow_pickle=True)\n", "x.py:2: numpy.load with allow_pickle=True"),
        ("import yaml\nx = yaml.load(s, Loader=yaml.Loader)\n", "x.py:2: yaml.load without SafeLoader"),
        ("import shelve\nx = shelve.open(p)\n", "x.py:2: shelve.open (unpickling)"),
    ],
)
def test_the_scan_catches_each_unsafe_form(code: str, hit: str) -> None:
    assert hit in unsafe_loads(code, "x.py")


def test_the_scan_accepts_safe_forms() -> None:
    code = (
        "import torch, yaml, numpy as np, json\n"
        "a = torch.load(p, map_location='cpu', weights_only=True)\n"
        "b = yaml.safe_load(s)\nc = yaml.load(s, Loader=yaml.SafeLoader)\nd = np.load(p)\ne = json.load(f)\n"
    )
    assert unsafe_loads(code, "ok.py") == []


SERVER_COMMAND = re.compile(r"^\s*(mlflow (ui|server)|kedro viz run)\b")


def test_documented_ui_commands_bind_to_localhost() -> None:
    commands = []
    for doc in [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]:
        in_code = False
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
            if line.lstrip().startswith("```"):
                in_code = not in_code
            elif in_code and SERVER_COMMAND.match(line):
                commands.append((f"{doc.relative_to(PROJECT_ROOT)}:{number}", line))
    assert {c.split()[0] + " " + c.split()[1] for _, c in commands} >= {"mlflow ui", "kedro viz"}
    unbound = [f"{where}: {line.strip()}" for where, line in commands if "--host 127.0.0.1" not in line]
    assert unbound == [], "UI commands must bind to 127.0.0.1:\n" + "\n".join(unbound)
