"""Docs match the code: docs/cli.md names every flag of every subcommand."""

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
