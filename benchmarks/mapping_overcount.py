"""Where the mapping's receptive boxes over-count traffic: per piece pair, the source
neurons its box overlap counts (`Mapping.overlaps`) against those with a real synapse into the
target piece (`mapping.exact_overlaps`, from the materialised matrices), on the shipped digits
models (compiled for loihi as examples/demo.py does) under forced small neuron-per-core limits,
and on a 1x1 stride-2 convolution. Prints, per case, pieces, exact and box pairs, their ratio and
the projections that over-count. Not a test (the matrices are materialised; seconds per case).

    .venv/bin/python benchmarks/mapping_overcount.py [--neurons 40,100,8192]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "artifacts")
sys.path.insert(0, os.path.join(ROOT, "backends", "lava", "tests"))
from conftest import strided_conv  # noqa: E402  (the graph the mapping tests measure by hand)


def compare(g, m) -> tuple[int, int, dict]:
    from snncc_lava import mapping

    exact = mapping.exact_overlaps(g, m)
    operands = {(p.source, p.target) for p in m.projections if p.encoding == "product"}
    per: dict = {}
    for (a, b), k in m.overlaps.items():
        key = (m.pieces[a].unit, m.pieces[b].unit)
        if key in operands:
            continue  # spike-product operands: not in exact_overlaps
        e = per.setdefault(key, [0, 0])
        e[1] += k
        e[0] += exact.get((a, b), 0)
    return sum(e for e, _ in per.values()), sum(b for _, b in per.values()), per


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", default="40,100,8192", help="neurons per core to force")
    args = ap.parse_args(argv)
    import snncc
    from snncc_lava import mapping

    cases = []
    with tempfile.TemporaryDirectory(prefix="overcount_") as d:
        for name in ("digits_cnn", "digits_former"):
            dep = snncc.compile(os.path.join(DIGITS, f"{name}.pt2"), target="loihi")
            cases.append((name, dep.deployed))
    cases.append(("1x1 conv stride 2 (8x8 -> 4x4)", strided_conv()))
    print(f"{'model':32} {'neurons/core':>12} {'pieces':>7} {'exact pairs':>12} {'box pairs':>10} {'ratio':>6}  over-counting projections")
    for name, g in cases:
        for n in [int(v) for v in args.neurons.split(",")]:
            res = dataclasses.replace(mapping.load_resources(), neurons=n)
            m = mapping.build(g, 10_000, res)
            if m.problems:
                print(f"{name:32} {n:>12} {m.problems[0]}")
                continue
            e, b, per = compare(g, m)
            worst = ", ".join(f"{s} -> {t} {y}/{x} ({y / x:.2f}x)" for (s, t), (x, y) in per.items() if y != x)
            print(f"{name:32} {n:>12} {len(m.pieces):>7} {e:>12,} {b:>10,} {b / e:>6.3f}  {worst or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
