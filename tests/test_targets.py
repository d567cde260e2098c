"""The typed target contract (snncc.targets): every installed target is a `Target` implementing
it, options are parsed once (`parse_options`) into the target's dataclass, and the core hands the
parsed object to every hook on the path users take (`snncc compile --target-option`)."""

import dataclasses
import inspect
import json
from dataclasses import dataclass
from importlib.metadata import EntryPoint

import pytest
import torch

from nets import ConvChain, randomize_bn
from snncc import artifact
from snncc.cli import main
from snncc.errors import TargetError
from snncc.targets import Options, SimTarget, Target, available, defaults, get, option, parse_options

HOOKS = [n for n, v in vars(Target).items() if inspect.isfunction(v) and not n.startswith("_")]


def installed() -> list[str]:
    return sorted(set(available()) | {"sim"})


@pytest.mark.parametrize("name", installed())
def test_every_installed_target_implements_the_contract(name):
    t = get(name)
    assert isinstance(t, Target) and t.name == name and t.description
    assert not getattr(type(t), "__abstractmethods__", None)  # check and emit are its own
    assert type(t).check is not Target.check and type(t).emit is not Target.emit
    for hook in HOOKS:  # an override takes at least the contract's parameters, in the same order
        base = list(inspect.signature(getattr(Target, hook)).parameters)
        own = list(inspect.signature(getattr(type(t), hook)).parameters)
        assert own[:len(base)] == base, f"{name}.{hook}{own} does not match Target.{hook}{base}"
    extra = {n for n in vars(type(t)) if inspect.isfunction(getattr(type(t), n)) and not n.startswith("_")} - set(HOOKS)
    assert not extra & {"validate_options", "options"}, "the old duck-typed hooks are gone"
    cls = t.Options
    assert issubclass(cls, Options) and dataclasses.is_dataclass(cls)
    assert all(m for m in cls.meanings().values()), "every option says what it means"
    parsed = parse_options(t, {})
    assert parsed.given() == {} and dataclasses.asdict(parsed) == defaults(cls)
    assert parse_options(t, parsed) is parsed  # parsed once: an already parsed object passes through
    assert isinstance(t.lowering_options(parsed), dict)


def test_option_strings_are_parsed_into_the_dataclass_once():
    @dataclass(frozen=True)
    class GainOptions(Options):
        gain: float = option(1.0, "a number > 0")
        mode: str = option("a", "a | b")

    class Gain(SimTarget):
        name = "gain"
        Options = GainOptions
        seen = []

        def validate(self, options):
            self.seen.append(dict(options.given()))
            if options.mode not in ("a", "b"):
                raise TargetError(f"unknown mode {options.mode!r}", where="gain option mode")

    t = Gain()
    o = parse_options(t, ["mode=b", "gain=2.5"])
    assert (o.gain, o.mode) == (2.5, "b") and o.given() == {"mode": "b", "gain": 2.5}  # the order given
    assert parse_options(t, o.given()) == o  # what the manifest stores parses back to the same options
    assert t.seen == [{"mode": "b", "gain": 2.5}, {"mode": "b", "gain": 2.5}]
    for items, msg in ((["mode"], "--target-option 'mode' must look like key=value"),
                       (["gian=2"], "unknown option(s) gian for target gain"),
                       (["gain=NaN"], "option gain = nan is not a finite number"),
                       (["mode=c"], "unknown mode 'c'")):
        with pytest.raises(TargetError) as e:
            parse_options(t, items)
        assert msg in str(e.value)
    with pytest.raises(TargetError, match="takes no options"):
        parse_options(SimTarget(), {"x": 1})


def test_defaults_refuse_or_do_nothing_explicitly():
    class Bare(Target):
        name = "bare"

        def check(self, graph, options):
            return []

        def emit(self, graph, options):
            return {}

    with pytest.raises(TypeError):  # check and emit have no default
        type("NoEmit", (Target,), {"check": lambda self, g, o: []})()
    t, o = Bare(), parse_options(Bare(), None)
    assert t.lowering_options(o) == {"profile": None} and t.explain(None, o) == ""
    assert (t.report_section({}), t.summary_note({}), t.memory_table(None), t.placement({})) == ("", "", "", None)
    assert t.reference(None, None) is None and t.simulation_options(o) == {}
    with pytest.raises(TargetError, match="target bare has no simulator"):
        t.simulate(None, None)
    with pytest.raises(TargetError, match="target bare cannot simulate a sub-graph"):
        t.simulate_part(None, None, ["a"])


# a target installed through an entry point, recording what the core hands its hooks
@dataclass(frozen=True)
class RecOptions(Options):
    scale: int = option(1, "an integer")
    tag: str = option("x", "any text")


class Recorder(Target):
    name = "rec"
    description = "records its hooks' options"
    Options = RecOptions
    profile = "45nm"
    calls: list = []

    def lowering_options(self, options):
        self.calls.append(("lowering_options", options))
        return {"profile": self.profile}

    def check(self, graph, options):
        self.calls.append(("check", options))
        return []

    def explain(self, graph, options):
        self.calls.append(("explain", options))
        return ""

    def emit(self, graph, options):
        self.calls.append(("emit", options))
        return {"rec.json": json.dumps({"scale": options.scale, "tag": options.tag}).encode()}


def test_the_core_hands_every_hook_the_parsed_options(tmp_path, monkeypatch, capsys):
    import snncc.targets as targets

    eps = dict(available())
    eps["rec"] = EntryPoint(name="rec", value=f"{__name__}:Recorder", group=targets.GROUP)
    monkeypatch.setattr(targets, "available", lambda: eps)
    Recorder.calls.clear()
    torch.manual_seed(0)
    p = tmp_path / "conv.pt2"
    torch.export.save(torch.export.export(randomize_bn(ConvChain()), (torch.zeros(1, 2, 8, 8),)), p)
    out = tmp_path / "art"
    code = main(["compile", str(p), "--target", "rec", "--target-option", "tag=hi", "--target-option", "scale=3",
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert [c for c, _ in Recorder.calls] == ["lowering_options", "check", "explain", "emit"]
    first = Recorder.calls[0][1]
    assert isinstance(first, RecOptions) and (first.scale, first.tag) == (3, "hi")
    assert all(o is first for _, o in Recorder.calls)  # one parsed object, not re-parsed per hook
    assert json.loads(artifact.read_file(str(out), "rec.json", artifact.read_manifest(str(out)))) == \
        {"scale": 3, "tag": "hi"}
    assert artifact.read_manifest(str(out))["target_options"] == {"tag": "hi", "scale": 3}
    code = main(["compile", str(p), "--target", "rec", "--target-option", "scale=Infinity", "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        "snncc: error: --target-option: option scale = inf is not a finite number (scale: an integer)"]
