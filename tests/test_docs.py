"""Docs match the code: docs/cli.md names every flag of every subcommand; no merge conflict markers."""

import argparse
import os

from snncc.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_reference_names_every_flag():
    text = open(os.path.join(ROOT, "docs", "cli.md")).read()
    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, p in sub.choices.items():
        if f"`snncc {name}" not in text:
            missing.append(name)
        for a in p._actions:
            for opt in a.option_strings:
                if opt.startswith("--") and opt != "--help" and f"`{opt}" not in text and f"{opt} " not in text:
                    missing.append(f"{name} {opt}")
    assert missing == [], missing


def test_no_merge_conflict_markers_in_the_tree():
    """A merge's conflict markers were once committed into docs/cli.md and docs/compiler.md: every
    tracked text file is free of them."""
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for f in files:
        if not f.endswith((".md", ".py", ".sh", ".toml", ".txt", ".json", ".yaml", ".yml", ".cfg")):
            continue
        with open(os.path.join(ROOT, f), encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh, 1):
                if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line.rstrip("\n") == "=======":
                    bad.append(f"{f}:{i}")
    assert not bad, bad
