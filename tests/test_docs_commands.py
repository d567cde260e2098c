"""Every shell command of the README's code blocks, run literally as a new user would,
in a scratch folder that holds what the commands name: `model.pt2`, `weights.pt` with its factory
`my_models.py:make_net` (the same small SFA CNN, so `verify model.pt2 out/` compares a model
with its own artefact), `out-loihi/` (compiled beforehand: the README assumes one), and the
repository's `examples/`. `.venv/bin/snncc` is this environment's console script. A command
that is not run is listed in NOT_RUN with the reason; a new command must be run or listed."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NOT_RUN = {
    "bash scripts/test.sh": "runs this whole test suite (it is CI's command, .ci/run)",
    "bash scripts/demo.sh": "the end-to-end demo on every shipped model takes minutes; its parts are the "
                            "commands below and tests/test_examples.py",
}

MY_MODELS = '''
import torch.nn as nn
import torch


class Fire(nn.Module):
    def __init__(self, D):
        super().__init__()
        self.D = D

    def forward(self, x):
        return torch.round(torch.clamp(x, 0, self.D)) / self.D


def make_net(D=4):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), Fire(D),
                         nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), Fire(D),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
'''


def readme_commands(path=os.path.join(ROOT, "README.md")) -> list[str]:
    text = open(path).read()
    cmds = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                cmds.append(re.sub(r"\s+#.*$", "", line).strip())  # the trailing comment
    return cmds


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    os.makedirs(d / ".venv" / "bin")
    os.symlink(os.path.join(os.path.dirname(sys.executable), "snncc"), d / ".venv" / "bin" / "snncc")
    os.symlink(os.path.join(ROOT, "examples"), d / "examples")
    (d / "my_models.py").write_text(MY_MODELS)
    ns = {}
    exec(MY_MODELS, ns)
    torch.manual_seed(0)
    net = ns["make_net"](D=4).eval()
    torch.save(net.state_dict(), d / "weights.pt")
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 8, 8),), strict=False), str(d / "model.pt2"))
    return d


def _run(cmd, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and os.path.isdir(p)))
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # about 100 s on the shared 2-core machine: the Lava run and the Speck compile dominate
def test_every_readme_command_runs_or_says_why_not(workdir):
    cmds = readme_commands()
    assert set(NOT_RUN) <= set(cmds), "NOT_RUN names a command the README no longer has"
    pre = _run(".venv/bin/snncc compile weights.pt --model-def my_models.py:make_net --input-shape 1,8,8 "
               "--target loihi -o out-loihi/", workdir)  # what `simulate out-loihi/` presupposes
    assert pre.returncode == 0, pre.stderr
    failed, outputs = [], {}
    for cmd in cmds:
        if cmd in NOT_RUN:
            continue
        p = _run(cmd, workdir)
        outputs[cmd] = p.stdout
        if p.returncode != 0:
            failed.append(f"{cmd}\n  -> exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
    assert failed == [], "\n".join(failed)
    assert (workdir / "model.nir").is_file() and (workdir / "rep" / "report.md").is_file()
    # the Speck commands: the shipped checkpoint at the T = 4 recorded with it, then every recording
    assert json.load(open(workdir / "out-speck" / "manifest.json"))["T"] == 4
    o = next(o for c, o in outputs.items() if "out-speck/ --events" in c)
    assert o.startswith("network: the Speck chip network (speck integers")  # what the chip was configured with
    assert o.splitlines()[1].startswith("450 recordings,") and "latency median" in o and "average power" in o


def test_the_command_list_is_what_the_readme_shows():
    cmds = readme_commands()
    assert ".venv/bin/snncc targets" in cmds and len(cmds) >= 10
    assert all(shlex.split(c) for c in cmds)  # each one parses as a shell command
