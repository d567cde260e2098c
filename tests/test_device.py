"""`--device`: the executors run where asked and give the CPU's results; an absent or
unknown device is one line; on a machine with a GPU the CUDA run equals the CPU run."""

import os
import subprocess
import sys

import pytest
import torch

import snncc
from nets import ResidualSepConv, randomize_bn

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")


@pytest.fixture(scope="module")
def dep():
    torch.manual_seed(0)
    return snncc.compile(randomize_bn(ResidualSepConv()), torch.zeros(2, 3, 8, 8))


def _same(a, b):
    return torch.equal(a.output, b.output) and all(torch.equal(a.counts[k], b.counts[k]) for k in a.counts)


def test_cpu_device_is_the_default(dep):
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert _same(dep.reference(x), dep.reference(x, device="cpu"))
    assert _same(dep.simulate(x, "exact"), dep.simulate(x, "exact", device="cpu"))


@pytest.mark.parametrize("device,msg", [("tpu", "unknown device 'tpu'"),
                                        ("cuda" if not torch.cuda.is_available() else "cuda:99",
                                         "no CUDA device" if not torch.cuda.is_available() else "does not exist")])
def test_bad_device_is_one_line(dep, tmp_path, device, msg):
    dep.save(str(tmp_path / "a"))
    p = subprocess.run([EXE, "simulate", str(tmp_path / "a"), "--device", device], capture_output=True, text=True)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("snncc: error: --device:") and msg in lines[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="runs where a GPU exists (none on CPU-only machines)")
def test_cuda_equals_cpu(dep):  # pragma: no cover - no GPU here
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cpu, gpu = dep.reference(x), dep.reference(x, device="cuda")
    assert all(torch.equal(cpu.counts[k], gpu.counts[k]) for k in cpu.counts)
    assert float((cpu.output - gpu.output).abs().max()) < 1e-9
    assert dep.verify(x, device="cuda").ok
    sim = dep.simulate(x, "exact", device="cuda")
    assert all(torch.equal(sim.counts[k], cpu.counts[k]) for k in cpu.counts)
    assert dep.estimate(x, device="cuda").totals == dep.estimate(x).totals
