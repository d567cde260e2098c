"""The core's import graph, read from the source (every import statement, function-local ones
included): no cycles between modules, every import points down the layer table below, and no
backend package is named by the core (chip targets are plugins found through entry points).

LAYERS is the one statement of the layering (docs/design.md §8.1 explains it): a module may import
modules of its own layer or of a lower one, never a higher one.
"""

from __future__ import annotations

import ast
import os
import re

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "snncc")

# Lowest first. A name covers the module and everything under it (`sim` is `snncc.sim.*`).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "resources", "version"),  # the error family, memory checks, the version string
    ("ir", "profile"),           # the typed spiking IR, what "deployed" means; chip profiles (data)
    ("artifact",),               # artefact folders on disk
    ("sim",),                    # executors of the IR (reference, T x D, events), the device they run on
    ("data",),                   # input data: files, shards, random inputs; batches over workers
    ("estimate",),               # cost models and reports over the IR and the simulators
    ("passes",),                 # graph rewrites (may price choices with estimate)
    ("nn", "models"),            # the SFA training layers and model families (PyTorch only)
    ("interop",),                # NIR in and out
    ("frontend",),               # model files -> traced IR
    ("targets",),                # the target registry (entry points)
    ("verify",),                 # every level against the PyTorch model
    ("compiler",),               # the one deploy driver
    ("api",),                    # snncc.compile / snncc.load / Deployment
    ("cli",),                    # the snncc command
    ("console",),                # the snncc script around it: signals, standard output, exit codes
    ("",),                       # the package itself (lazy public names)
]
BACKENDS = ("snncc_lava", "snncc_speck", "lava", "sinabs", "samna")


def modules() -> dict[str, str]:
    """Dotted module name under `snncc` ("" for the package, "sim.sync", ...) -> file path."""
    out = {}
    for d, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
                name = rel[: -len("__init__")].rstrip(".") if rel.endswith("__init__") else rel
                out[name] = os.path.join(d, f)
    return out


def imports(mods: dict[str, str]) -> list[tuple[str, str, int]]:
    """(importer, imported, line): imported is a dotted name under `snncc` (as in `modules()`), or
    `!top` for a top-level package outside snncc. `from a import b` counts as importing `a.b` when
    that is a module, else `a`. `importlib.import_module("literal")` counts too."""
    edges = []
    for name, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        for node in ast.walk(ast.parse(open(path).read(), path)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = ("snncc." + name if name else "snncc").split(".")
                    here = here if is_pkg else here[:-1]
                    here = here[: len(here) - node.level + 1]
                    base = ".".join(here + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub[len("snncc."):] in mods and sub.startswith("snncc.") else base)
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
                  ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
                targets = [str(node.args[0].value)]
            for t in targets:
                if t == "snncc" or t.startswith("snncc."):
                    t = t[len("snncc."):] if t != "snncc" else ""
                    if t != name:
                        edges.append((name, t, node.lineno))
                else:
                    edges.append((name, "!" + t.split(".")[0], node.lineno))
    return edges


def layer(mod: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for n in names:
            if mod == n or (n and mod.startswith(n + ".")):
                best = i
    assert best is not None, f"snncc.{mod} is in no layer: add it to LAYERS in tests/test_layering.py"
    return best


def cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        if not b.startswith("!"):
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _show(m: str) -> str:
    return "snncc" if m == "" else f"snncc.{m}"


def test_every_module_has_a_layer():
    for m in modules():
        layer(m)


def test_no_import_cycles():
    found = cycles(imports(modules()))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(map(_show, c)) for c in found)


def test_imports_point_down_the_layers():
    mods = modules()
    bad = sorted({f"{_show(a)}:{line} imports {_show(b)} (layer {_show(LAYERS[layer(a)][0])} < "
                  f"{_show(LAYERS[layer(b)][0])})"
                  for a, b, line in imports(mods) if not b.startswith("!") and layer(b) > layer(a)})
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_core_names_no_backend():
    bad = [f"{_show(a)}:{line} imports {b[1:]}" for a, b, line in imports(modules())
           if b.startswith("!") and b[1:] in BACKENDS]
    assert not bad, "the core imports a backend (targets are found through entry points):\n" + "\n".join(bad)


def test_design_doc_states_the_same_layers():
    """docs/design.md §8.1 shows LAYERS as a table: one row per layer, its modules in backticks."""
    text = open(os.path.join(os.path.dirname(ROOT), "docs", "design.md")).read()
    section = text.split("### 8.1", 1)[1].split("###", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    doc = [tuple("" if m == "snncc" else m for m in re.findall(r"`([a-z_.]+)`", row.split("|")[2])) for row in rows]
    assert doc == LAYERS


def test_the_checker_sees_what_it_must():
    """The reader itself: a function-local import, a relative import and a cycle are found."""
    edges = [("a", "b", 1), ("b", "c", 2), ("c", "a", 3), ("c", "d", 4)]
    assert cycles(edges) == [["a", "b", "c"]]
    found = imports(modules())
    assert ("", "api", 10) in found                        # snncc.__getattr__'s function-local import
    assert any(a == "nn" and b == "nn.neuron" for a, b, _ in found)   # `from .neuron import ...`
    assert layer("sim.events.runner") == layer("sim") < layer("passes") < layer("cli")


# Backend names in the core's source text (comments and strings included): a chip target's package,
# SDK or file layout is the target's own business, asked of the target object (snncc.targets.Target).
# sinabs is also a model library snncc *reads* (frontend peers: IAFSqueeze models, their (B*T, ...)
# layout) and a NIR reader it writes for: the modules doing that may name it, as a peer, not as
# the speck backend's SDK.
BACKEND_TEXT = re.compile(r"snncc_lava|snncc_speck|\blava[./]|\bsamna\b|\bsinabs\b")
SINABS_AS_PEER = {"frontend.peers", "frontend.fx_trace", "interop.nir_io", "data.inputs", "api", "cli"}


def backend_mentions(mods: dict[str, str]) -> list[str]:
    out = []
    for name, path in sorted(mods.items()):
        for i, line in enumerate(open(path).read().splitlines(), 1):
            for m in BACKEND_TEXT.finditer(line):
                if m.group() == "sinabs" and name in SINABS_AS_PEER:
                    continue
                out.append(f"{_show(name)}:{i}: {m.group()!r} in {line.strip()[:100]}")
    return out


def test_core_source_names_no_backend_package():
    bad = backend_mentions(modules())
    assert not bad, ("the core names a backend package or its files (ask the target object: "
                     "snncc.targets.Target):\n" + "\n".join(bad))


def test_backend_text_check_sees_what_it_must(tmp_path):
    p = tmp_path / "m.py"
    p.write_text('x = files["lava/mapping.json"]\nimport snncc_speck\n# sinabs helper\nnot lavaish = 1\n')
    found = backend_mentions({"estimate.m": str(p)})
    assert [f.split(": ")[1].split(" in ")[0] for f in found] == ["'lava/'", "'snncc_speck'", "'sinabs'"]
    assert len(backend_mentions({"frontend.peers": str(p)})) == 2  # sinabs as a peer library is allowed there
