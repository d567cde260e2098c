import pytest

from nets import ConvChain, randomize_bn
from snncc.errors import PassError
from snncc.passes.manager import DEPLOY, run_pipeline


def test_pipeline_logs_changes_and_dumps(trace_model):
    _, g = trace_model(randomize_bn(ConvChain()))
    run = run_pipeline(g, "deploy", dump_after=("fold_batchnorm",))
    assert [name for name, _ in run.log] == DEPLOY
    log = dict(run.log)
    assert log["fold_batchnorm"] == ["folded b1 into c1", "folded b2 into c2"]
    assert "batchnorm" in _ops(g) and "batchnorm" not in run.dumps["fold_batchnorm"]


def _ops(g):
    return {n.op for n in g}


def test_unknown_dump_after(trace_model):
    _, g = trace_model(randomize_bn(ConvChain()))
    with pytest.raises(PassError, match="--dump-after fold_bn: no such pass"):
        run_pipeline(g, "deploy", dump_after=("fold_bn",))
