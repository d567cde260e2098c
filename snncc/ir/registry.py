"""Op behaviour in one place: per op of the IR (`snncc.ir.ops.OPS`), which executor, cost model and
target implements it, and why the others refuse it.

A *column* is something that gives ops a behaviour: an executor of the IR (the reference
interpreter, the synchronous simulator, the event simulator), a cost model of the estimator (host
MACs, fan-out classes, structural path counts), a target's lowering or a rewrite pass whose
rules are per op (reparam: what fuses into a projection). Every column is declared
once (`column`), then each op gets one cell per column, TVM `set_attr` / Lava `@implements` style:

    @implements("conv", executor="reference")
    def op_conv(self, n, x): ...

    refuse("spike_product", executor="event", why="spike products (attention) are not simulated event by event")

`supports(ops, executor=..., where=...)` declares implementations that live inside a module's own
code (a backend's lowering, the event simulator's address maps) without moving them. `lookup`
returns the implementation or raises one line naming the op and the column; `matrix` and
`missing` give the op x column table that tests/test_op_registry.py checks (every cell
implemented or refused with a reason) and that scripts/op_matrix.py prints into docs/ops.md.

The registry imports nothing above the IR: modules register themselves when imported (the
executors and cost models at import, the backends through their own modules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from snncc.errors import SnnccError
from snncc.ir.ops import OPS

KINDS = ("executor", "cost", "target", "rewrite")

# Refusals many columns share (one wording, one place).
NOT_DEPLOYED = ("not in synaptic normal form: the deploy pipeline folds batchnorm into its projection "
                "(fold_batchnorm) and fuses a constant border into the projection it feeds (reparam)")
NOT_IN_A_TREE = "a population or a graph end: the source or consumer of a current tree, never an op inside one"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # one of KINDS
    about: str  # one line: what the column is
    module: str  # where its cells are registered


@dataclass(frozen=True)
class Cell:
    """One (op, column) entry: an implementation (`impl`, a callable or the place it lives) or a
    refusal (`why`)."""

    op: str
    column: str
    impl: Any = None
    where: str = ""  # the module or function that implements it
    why: str = ""  # the reason of a refusal

    @property
    def refused(self) -> bool:
        return self.impl is None


class OpNotImplemented(SnnccError):
    """An op an executor, cost model or target neither implements nor refuses, or refuses."""


COLUMNS: dict[str, Column] = {}
CELLS: dict[tuple[str, str], Cell] = {}


def column(name: str, kind: str, about: str, module: str = "") -> Column:
    """Declare a column (idempotent for the same declaration)."""
    if kind not in KINDS:
        raise ValueError(f"column kind must be one of {KINDS}, got {kind!r}")
    c = Column(name, kind, about, module)
    old = COLUMNS.get(name)
    if old is not None and old != c:
        raise ValueError(f"column {name!r} declared twice differently: {old} and {c}")
    COLUMNS[name] = c
    return c


def _column_of(kw: dict) -> str:
    given = [(k, v) for k, v in kw.items() if v is not None]
    if len(given) != 1 or given[0][0] not in KINDS:
        raise TypeError(f"name exactly one of executor=, cost=, target=, rewrite=; got {kw}")
    name = given[0][1]
    if name not in COLUMNS:
        raise ValueError(f"column {name!r} is not declared (registry.column)")
    if COLUMNS[name].kind != given[0][0]:
        raise ValueError(f"column {name!r} is a {COLUMNS[name].kind}, not a {given[0][0]}")
    return name


def _put(cell: Cell) -> None:
    key = (cell.op, cell.column)
    old = CELLS.get(key)
    if old is not None and (old.impl is not cell.impl or old.why != cell.why or old.where != cell.where):
        raise ValueError(f"op {cell.op}: {cell.column} registered twice ({old.where or old.why} and "
                         f"{cell.where or cell.why})")
    CELLS[key] = cell


def implement(op: str, fn: Any, *, where: str = "", executor: str | None = None, cost: str | None = None,
              target: str | None = None, rewrite: str | None = None) -> Any:
    """Register `fn` as the behaviour of `op` in one column."""
    col = _column_of({"executor": executor, "cost": cost, "target": target, "rewrite": rewrite})
    if fn is None:
        raise ValueError("an implementation cannot be None (use refuse)")
    where = where or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    _put(Cell(op, col, fn, where))
    return fn


def implements(*ops: str, executor: str | None = None, cost: str | None = None,
               target: str | None = None, rewrite: str | None = None) -> Callable:
    """Decorator: the function is the behaviour of each of `ops` in one column."""
    def deco(fn):
        for op in ops:
            implement(op, fn, executor=executor, cost=cost, target=target, rewrite=rewrite)
        return fn
    return deco


def supports(ops: Iterable[str], *, where: str, executor: str | None = None, cost: str | None = None,
             target: str | None = None, rewrite: str | None = None) -> None:
    """Declare that `where` (a module or function, named in words) implements `ops` in one column,
    for code that dispatches by itself (a backend's lowering, the event simulator's address maps)."""
    for op in ops:
        implement(op, where, where=where, executor=executor, cost=cost, target=target, rewrite=rewrite)


def refuse(*ops: str, why: str, executor: str | None = None, cost: str | None = None,
           target: str | None = None, rewrite: str | None = None) -> None:
    """Declare that a column does not implement `ops`, and why (one line the user reads)."""
    col = _column_of({"executor": executor, "cost": cost, "target": target, "rewrite": rewrite})
    if not why.strip():
        raise ValueError(f"a refusal of {ops} by {col} needs a reason")
    for op in ops:
        _put(Cell(op, col, None, "", why))


def cell(op: str, col: str) -> Cell | None:
    return CELLS.get((op, col))


def lookup(op: str, col: str, where: str | None = None) -> Any:
    """The implementation of `op` in column `col`; one line naming both when it is refused or missing."""
    c = CELLS.get((op, col))
    if c is not None and not c.refused:
        return c.impl
    kind = COLUMNS[col].kind if col in COLUMNS else "column"
    if c is not None:
        raise OpNotImplemented(f"op {op}: the {col} {kind} refuses it: {c.why}", where=where)
    raise OpNotImplemented(f"op {op}: the {col} {kind} has no implementation and no refusal registered",
                           where=where, hint="register one in snncc.ir.registry (implements or refuse)")


def table(col: str) -> dict[str, Any]:
    """op -> implementation of every op `col` implements (refusals left out)."""
    return {op: c.impl for (op, k), c in CELLS.items() if k == col and not c.refused}


def columns(kind: str | None = None) -> list[Column]:
    """Declared columns, executors first, then cost models, then targets, then rewrites; within a kind the
    reference first, then by name (not by declaration: that follows import order, which differs
    between a program that imported the event simulator first and one that did not)."""
    return [c for k in KINDS for c in sorted(COLUMNS.values(), key=lambda c: (c.name != "reference", c.name))
            if c.kind == k and (kind is None or k == kind)]


def matrix(ops: Iterable[str] | None = None) -> list[tuple[str, list[Cell | None]]]:
    """Per op (the IR's op table order), one cell per declared column (None: neither implemented nor refused)."""
    ops = list(OPS) if ops is None else list(ops)
    cols = [c.name for c in columns()]
    return [(op, [CELLS.get((op, c)) for c in cols]) for op in ops]


def missing(ops: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(op, column) of every cell neither implemented nor refused with a reason."""
    out = []
    for op, cells in matrix(ops):
        for c, name in zip(cells, [c.name for c in columns()]):
            if c is None or (c.refused and not c.why.strip()):
                out.append((op, name))
    return out


def strays() -> list[tuple[str, str]]:
    """(op, column) of cells registered for an op the IR does not declare (a typo or a removed op)."""
    return sorted(k for k in CELLS if k[0] not in OPS)


def markdown(ops: Iterable[str] | None = None) -> str:
    """The matrix as a markdown table (`yes`, `no (n)` with reason n listed below, `MISSING`), then
    the columns and the reasons."""
    cols = columns()
    reasons: dict[str, int] = {}
    lines = ["| op | " + " | ".join(f"{c.name} ({c.kind})" for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for op, cells in matrix(ops):
        row = []
        for c in cells:
            if c is None:
                row.append("MISSING")
            elif c.refused:
                k = reasons.setdefault(c.why, len(reasons) + 1)
                row.append(f"no ({k})")
            else:
                row.append("yes")
        lines.append(f"| {op} | " + " | ".join(row) + " |")
    lines += ["", "Columns:", ""]
    lines += [f"- **{c.name}** ({c.kind}, `{c.module}`): {c.about}" for c in cols]
    lines += ["", "Refusals:", ""]
    lines += [f"{k}. {why}" for why, k in reasons.items()]
    return "\n".join(lines)


__all__ = ["KINDS", "NOT_DEPLOYED", "NOT_IN_A_TREE", "Column", "Cell", "OpNotImplemented", "COLUMNS", "CELLS", "column", "implement", "implements",
           "supports", "refuse", "cell", "lookup", "table", "columns", "matrix", "missing", "strays", "markdown"]
