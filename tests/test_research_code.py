"""Research-code idioms of official SFA models, written the way their repositories
write them (not with snncc classes): the model adds its own time axis with
`x.unsqueeze(0).repeat(T, 1, 1, 1, 1)`, runs its convs on `x.flatten(0, 1)` and reshapes back,
and averages over time after the head (`head(x).mean(0)`); integer neurons without the 1/D; max
pooling refused in one line."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncc
from nets import Fire, randomize_bn
from snncc.errors import FrontendError


class RepeatT(nn.Module):
    def __init__(self, T=4, D=4, norm=None, head_after_mean=False):
        super().__init__()
        self.T, self.head_after_mean = T, head_after_mean
        self.c1, self.b1, self.n1 = nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), Fire(D, norm=norm)
        self.c2, self.b2, self.n2 = nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), Fire(D, norm=norm)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)  # (T, B, C, H, W)
        T, B = x.shape[0], x.shape[1]
        x = self.b1(self.c1(x.flatten(0, 1)))
        x = self.n1(x.reshape(T, B, *x.shape[1:]))
        x = self.b2(self.c2(x.flatten(0, 1)))
        x = self.n2(x.view(T, B, -1, 4, 4))
        x = x.flatten(3).mean(3)  # (T, B, C)
        if self.head_after_mean:
            return self.head(x.mean(0))
        return self.head(x).mean(0)


def _check(model, T):
    torch.manual_seed(0)
    m = randomize_bn(model)
    dep = snncc.compile(m, torch.zeros(2, 2, 8, 8))
    assert dep.deployed.T == dep.traced.T == T
    x = torch.randn(6, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 2
    rep = dep.verify(x)
    assert rep.ok and rep.levels[0].max_logit_diff < 1e-9, rep.table()  # float64 eager vs the IR
    sim = dep.simulate(x, "exact")
    ref = dep.reference(x)
    assert all(torch.equal(sim.counts[k], c) for k, c in ref.counts.items())
    single = type(model)(T=1, **_kw(model))  # the same weights, one timestep
    single.load_state_dict(m.state_dict())
    one = snncc.compile(single.eval(), torch.zeros(2, 2, 8, 8)).reference(x)  # T identical windows
    for k, c in ref.counts.items():
        assert torch.equal(c, T * one.counts[k])
    return dep


def _kw(model):
    return {"head_after_mean": model.head_after_mean, "D": model.n1.D,
            "norm": None if model.n1.norm == model.n1.D else model.n1.norm}


@pytest.mark.parametrize("T", [1, 4])
def test_model_that_repeats_its_input_over_time(T):
    _check(RepeatT(T=T), T)


def test_head_after_the_time_mean_and_neurons_without_1_over_D():
    _check(RepeatT(T=2, head_after_mean=True), 2)
    _check(RepeatT(T=3, norm=1), 3)  # round(clamp(x, 0, 4)) feeds the next conv directly


class MaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0, self.n0 = nn.Conv2d(2, 2, 1), Fire(4)
        self.c, self.n, self.p = nn.Conv2d(2, 4, 3, padding=1), Fire(4), nn.MaxPool2d(2)

    def forward(self, x):  # max pooling of a spike-driven current read by a scale, not by a neuron alone (a
        # stateless neuron reading it commutes with it and deploys: tests/test_seg_heads.py; of spikes:
        # test_binary_neurons.py; on the input's encoding, before any neuron: test_snntorch_loop.py)
        return self.n(self.p(self.c(self.n0(self.c0(x)))) * 2.0).flatten(1)


def test_max_pooling_of_a_current_is_refused_in_one_line():
    with pytest.raises(FrontendError) as e:
        snncc.compile(MaxPool(), torch.zeros(2, 2, 8, 8))
    assert "max pooling of a current is not deployable" in e.value.one_line() and "\n" not in e.value.one_line()


class KeepsTime(RepeatT):
    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B = x.shape[0], x.shape[1]
        x = self.n1(self.b1(self.c1(x.flatten(0, 1))).reshape(T, B, 6, 8, 8))
        return x.flatten(2)


def test_output_that_keeps_the_time_axis_is_its_mean_over_T():
    """Multi-step code returns (T, B, ...) and averages outside the model: the deployed read-out is
    that mean over T (as x.mean(0) inside the model would be), the eager model averaged alike."""
    torch.manual_seed(0)
    net = KeepsTime().eval()
    x = torch.rand(3, 2, 8, 8)
    dep = snncc.compile(net, x[:1])
    assert dep.traced.meta["output_time_axis"] == 0
    assert "keeps the time axis (T, B, ...): deployed as its mean over T" in dep.summary
    r = dep.verify(x, model=net)
    assert r.ok, r
    with torch.no_grad():
        want = net(x).mean(0)
    got = dep.simulate(x).output
    assert torch.equal(got.to(want.dtype), want), (got - want).abs().max()


class BNAndPadLayer(nn.Module):
    """As in the official re-parameterisable conv blocks: BN on spikes, padding filled with BN(0)."""

    def __init__(self, pad_pixels, num_features, fill=True):
        super().__init__()
        self.bn, self.pad_pixels, self.fill = nn.BatchNorm2d(num_features), pad_pixels, fill

    def forward(self, input):
        output = self.bn(input)
        if self.pad_pixels > 0:
            pad_values = self.bn.bias.detach() - self.bn.running_mean * self.bn.weight.detach() / torch.sqrt(
                self.bn.running_var + self.bn.eps)
            output = F.pad(output, [self.pad_pixels] * 4)
            if self.fill:
                pad_values = pad_values.view(1, -1, 1, 1)
                output[:, :, 0:self.pad_pixels, :] = pad_values
                output[:, :, -self.pad_pixels:, :] = pad_values
                output[:, :, :, 0:self.pad_pixels] = pad_values
                output[:, :, :, -self.pad_pixels:] = pad_values
        return output


class RepConv(nn.Module):
    def __init__(self, fill=True, conv_padding=0, pad=1):
        super().__init__()
        self.c0, self.b0, self.n0 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), Fire(4)
        self.bnpad = BNAndPadLayer(pad, 4, fill)
        self.c1 = nn.Conv2d(4, 6, 3, padding=conv_padding, bias=False)
        self.b1, self.n1 = nn.BatchNorm2d(6), Fire(4)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        y = self.n1(self.b1(self.c1(self.bnpad(self.n0(self.b0(self.c0(x)))))))
        return self.head(y.mean((2, 3)))


def test_batchnorm_on_spikes_folds_into_the_next_conv_border_exact():
    torch.manual_seed(0)
    m = randomize_bn(RepConv())
    dep = snncc.compile(m, torch.zeros(2, 2, 8, 8))
    ops = [n.op for n in dep.traced.nodes]
    assert ops.count("batchnorm") == 2  # the two BNs on currents; the one on spikes became scale + conv bias
    c1 = dep.traced["c1"]
    bn = m.bnpad.bn
    g_, b_, mu, var = (t.detach().double().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var))
    a = g_ / (var + bn.eps) ** 0.5  # the fold, by hand in float64
    shift = b_ - mu * a
    w = m.c1.weight.detach().double().numpy()
    assert c1.attrs["padding"] == (1, 1)
    assert (abs(c1.params["bias"] - (w * shift[None, :, None, None]).sum((1, 2, 3)))).max() < 1e-12
    assert (abs(dep.traced[c1.inputs[0]].params["factor"].reshape(-1) - a)).max() < 1e-12
    x = torch.randn(8, 2, 8, 8, generator=torch.Generator().manual_seed(2)) * 2
    rep = dep.verify(x)
    assert rep.ok and rep.levels[0].max_logit_diff < 1e-9, rep.table()


@pytest.mark.parametrize("kw,msg", [
    ({"fill": False}, "not filled with the BatchNorm's shift"),
    ({"pad": 0, "conv_padding": 1}, "before a zero-padded conv does not fold exactly"),
])
def test_batchnorm_on_spikes_that_cannot_fold_exactly_is_refused(kw, msg):
    with pytest.raises(FrontendError) as e:
        snncc.compile(randomize_bn(RepConv(**kw)), torch.zeros(2, 2, 8, 8))
    assert msg in e.value.one_line()
