"""IR: op table rules, inference errors, verifier, serialisation round trip, listing."""

import json

import numpy as np
import pytest

from snncc.errors import IRError, LoadError
from snncc.ir import Graph, Node
from snncc.ir import serialize
from snncc.ir.printer import listing


def small_graph():
    w = np.arange(2 * 1 * 3 * 3, dtype=float).reshape(2, 1, 3, 3) / 10
    return Graph([
        Node("x", "input", [], {"kind": "current", "shape": (1, 5, 5)}),
        Node("c", "conv", ["x"], {"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1)},
             {"weight": w, "bias": np.array([0.1, -0.2])}),
        Node("f", "fire", ["c"], {"D": 4, "norm": 4.0}),
        Node("p", "pool", ["f"], {"mode": "sum", "kernel": (3, 3), "stride": (3, 3)}),
        Node("r", "reshape", ["p"], {"shape": (2,)}),
        Node("l", "linear", ["r"], {}, {"weight": np.ones((3, 2))}),
        Node("out", "output", ["l"]),
    ]).infer()


def test_shapes_and_kinds_inferred():
    g = small_graph()
    assert g["c"].shape == (2, 3, 3) and g["c"].kind == "current"
    assert g["f"].kind == "spike"
    assert g["p"].shape == (2, 1, 1) and g["p"].kind == "current"
    assert g["r"].kind == "current" and g["out"].shape == (3,)


def test_neuron_on_spikes_is_rejected_naming_the_node():
    g = small_graph()
    g.append(Node("f2", "fire", ["f"], {"D": 4}))
    with pytest.raises(IRError, match=r"node f2: .*neuron consumes a current"):
        g.infer()


def test_add_of_spike_tensors_rejected():
    g = Graph([Node("x", "input", [], {"kind": "spike", "shape": (3,)}),
               Node("a", "add", ["x", "x"]), Node("o", "output", ["a"])])
    with pytest.raises(IRError, match="node a: add: expects current inputs"):
        g.infer()


def test_conv_channel_mismatch_message():
    g = Graph([Node("x", "input", [], {"shape": (3, 4, 4)}),
               Node("c", "conv", ["x"], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
                    {"weight": np.ones((2, 2, 1, 1))})])
    with pytest.raises(IRError, match="node c: conv: input has 3 channels but weight expects 2"):
        g.infer()


def test_unknown_attribute_and_missing_param():
    with pytest.raises(IRError, match="node f: op fire has no attribute 'Dmax'"):
        Node("f", "fire", ["x"], {"Dmax": 3})
    with pytest.raises(IRError, match="node l: op linear needs parameter 'weight'"):
        Node("l", "linear", ["x"])


def test_bad_fire_attributes():
    for attrs, msg in [({"D": 0}, r"D must be an integer in 1\.\.32768"), ({"D": 2, "theta": 0.0}, "theta must be > 0"),
                       ({"D": 2, "rounding": "up"}, "rounding must be one of")]:
        g = Graph([Node("x", "input", [], {"shape": (2,)}), Node("f", "fire", ["x"], attrs), Node("o", "output", ["f"])])
        with pytest.raises(IRError, match=msg):
            g.infer()


def test_verify_rejects_nonfinite_and_undefined_inputs():
    g = small_graph()
    g["l"].params["weight"][0, 0] = np.nan
    with pytest.raises(IRError, match="node l: parameter weight has non-finite values"):
        g.verify()
    g2 = Graph([Node("x", "input", [], {"shape": (2,)}), Node("o", "output", ["y"])])
    with pytest.raises(IRError, match="node o: input 'y' is not defined"):
        g2.infer()


def test_spike_product_shapes_and_order():
    g = Graph([Node("q", "input", [], {"kind": "spike", "shape": (2, 5, 3)}),
               Node("kt", "permute", ["q"], {"dims": (0, 2, 1)}),
               Node("sp", "spike_product", ["q", "kt", "q"], {"order": "right"}),
               Node("o", "output", ["sp"])]).infer()
    assert g["sp"].shape == (2, 5, 3) and g["sp"].kind == "current"


def test_serialisation_round_trip_is_exact_and_deterministic():
    g = small_graph()
    g.T = 3
    g.meta["source"] = "m.pt2"
    doc, npz = serialize.dumps(g)
    g2 = serialize.loads(doc, npz)
    assert [(n.name, n.op, n.inputs, n.attrs, n.shape, n.kind) for n in g2] == \
        [(n.name, n.op, n.inputs, n.attrs, n.shape, n.kind) for n in g]
    for n in g:
        assert set(n.params) == set(g2[n.name].params)
        for k in n.params:
            assert np.array_equal(n.params[k], g2[n.name].params[k])
    assert g2.T == 3 and g2.meta == {"source": "m.pt2"}
    assert serialize.dumps(g2) == (doc, npz)


def test_an_array_in_the_meta_is_stored_in_the_archive_not_as_json_text():
    """A per-neuron table in the meta goes to the graph's own .npz under meta/<path> and comes back
    as the same float64 values; scalars and lists stay JSON; the bytes are deterministic."""
    import io
    import json

    g = small_graph()
    corr = np.array([0.125, -3.0, 1.0 / 3.0])  # 1/3 is not float32-exact: stored as float64
    g.meta["target"] = {"t": {"choices": {"p1": {"shift": 1, "bias": corr}}, "bits": np.int64(16)}}
    doc, npz = serialize.dumps(g)
    meta = json.loads(doc)["meta"]
    assert meta == {"target": {"t": {"choices": {"p1": {"shift": 1, "bias": {"$array": "meta/target/t/choices/p1/bias"}}},
                                     "bits": 16}}}
    stored = np.load(io.BytesIO(npz))["meta/target/t/choices/p1/bias"]
    assert stored.dtype == np.float64 and stored.tolist() == corr.tolist()
    g2 = serialize.loads(doc, npz)
    back = g2.meta["target"]["t"]["choices"]["p1"]["bias"]
    assert isinstance(back, np.ndarray) and back.tolist() == corr.tolist()
    assert serialize.dumps(g2) == (doc, npz)
    with pytest.raises(LoadError, match="parameter 'meta/x' missing from the archive"):
        serialize.loads(doc.replace(b'"meta/target/t/choices/p1/bias"', b'"meta/x"'), npz)


def test_a_meta_array_of_whole_numbers_is_stored_as_the_narrowest_integer():
    """Whole numbers in the meta (a count of bias LSBs per neuron) are stored as int8 / int16 /
    int32, whichever first holds them all, whatever dtype they came in; they load back as the same
    float64 values and are written again byte for byte. -0.0, a fraction or a value beyond int32
    keeps the float storage."""
    import io

    cases = {"i8": (np.array([127, -128, 0], np.int64), np.int8),
             "i16": (np.array([128.0, -3.0]), np.int16),
             "i32": (np.array([-32769, 5], np.int32), np.int32),
             "big": (np.array([2.0**31, 1.0]), np.float32),
             "negzero": (np.array([-0.0, 1.0]), np.float32),
             "frac": (np.array([0.5, 1.0]), np.float32)}
    g = small_graph()
    g.meta["t"] = {k: cases[k][0] for k in sorted(cases)}  # JSON order: the archive writes them in it
    doc, npz = serialize.dumps(g)
    with np.load(io.BytesIO(npz)) as z:
        for k, (v, dtype) in cases.items():
            assert z[f"meta/t/{k}"].dtype == dtype, k
            assert z[f"meta/t/{k}"].tobytes() == v.astype(dtype).tobytes(), k
    g2 = serialize.loads(doc, npz)
    for k, (v, _) in cases.items():
        back = g2.meta["t"][k]
        assert back.dtype == np.float64 and back.astype(np.float64).tobytes() == v.astype(np.float64).tobytes(), k
    assert serialize.dumps(g2) == (doc, npz)


def test_load_rejects_wrong_version_and_garbage():
    g = small_graph()
    doc, npz = serialize.dumps(g)
    with pytest.raises(LoadError, match="graph schema version 99"):
        serialize.loads(doc.replace(b'"version": 2', b'"version": 99'), npz)
    with pytest.raises(LoadError, match="not a JSON document"):
        serialize.loads(doc[:50], npz)
    with pytest.raises(LoadError, match="parameter archive unreadable"):
        serialize.loads(doc, npz[:100])


def test_listing_rows():
    text = listing(small_graph())
    lines = text.splitlines()
    assert lines[0] == "# graph: 7 nodes, T=1"
    row = {l.split()[0]: l for l in lines[2:]}
    assert "NO (MACs)" in row["c"] and "k=3 s=2 p=1 +bias" in row["c"]
    assert "D=4 theta=1 beta=0 norm=4 half_even" in row["f"]
    assert "yes" in row["p"] and "sum k=3 s=3" in row["p"]
    assert "yes" in row["l"]


def test_value_numbers_share_identical_private_copies_only():
    from snncc.ir.analysis import value_numbers

    w = np.arange(4.0).reshape(2, 2)
    g = Graph([Node("x", "input", [], {"shape": (2,)}),
               Node("a", "linear", ["x"], {}, {"weight": w}),
               Node("b", "linear", ["x"], {}, {"weight": w.copy()}),  # same value as a
               Node("c", "linear", ["x"], {}, {"weight": w + 1e-12}),  # one ulp-ish off: its own
               Node("fa", "fire", ["a"], {"D": 4}), Node("fb", "fire", ["b"], {"D": 4}),  # fires never merge
               Node("sa", "scale", ["fa"], {}, {"factor": np.array(2.0)}),
               Node("sb", "scale", ["fb"], {}, {"factor": np.array(2.0)}),  # different input: its own
               Node("s", "add", ["sa", "sb", "c"]), Node("o", "output", ["s"])]).infer()
    vn = value_numbers(g)
    assert {k for k, v in vn.items() if k != v} == {"b"} and vn["b"] == "a"
    # a later copy of the second distinct value in a group finds that value, not the first
    g.insert_before("o", Node("d", "linear", ["x"], {}, {"weight": w + 1e-12}))
    g.infer()
    vn = value_numbers(g)
    assert {k for k, v in vn.items() if k != v} == {"b", "d"} and vn["d"] == "c"


def test_value_numbers_compare_the_values_when_digests_collide(monkeypatch):
    from snncc.ir import analysis

    monkeypatch.setattr(analysis, "_digest", lambda a: b"same")  # every parameter hashes alike
    w = np.arange(4.0).reshape(2, 2)
    g = Graph([Node("x", "input", [], {"shape": (2,)}),
               Node("a", "linear", ["x"], {}, {"weight": w}),
               Node("c", "linear", ["x"], {}, {"weight": w + 1}),  # same digest, other value: its own
               Node("b", "linear", ["x"], {}, {"weight": w.copy()}),
               Node("s", "add", ["a", "b", "c"]), Node("o", "output", ["s"])]).infer()
    vn = analysis.value_numbers(g)
    assert {k for k, v in vn.items() if k != v} == {"b"} and vn["b"] == "a"


def test_shared_parameter_arrays_stay_shared_through_clone_and_files():
    """The normal form's private copies share their weights: one array in memory (read-only) and
    one entry in the archive, and loading gives one array again."""
    import io
    import zipfile

    w = np.arange(6.0).reshape(3, 2)
    g = Graph([Node("x", "input", [], {"shape": (2,)}),
               Node("a", "linear", ["x"], {}, {"weight": w}),
               Node("o", "output", ["a"])]).infer()
    b = g["a"].clone()
    b.name = "b"
    g.insert_before("o", b)
    g["o"].inputs = ["b"]
    assert g["b"].params["weight"] is g["a"].params["weight"] and not w.flags.writeable
    c = g.clone()
    assert c["a"].params["weight"] is c["b"].params["weight"] is w  # clones share (immutable) arrays
    with pytest.raises(ValueError):
        c["b"].params["weight"][0, 0] = 1.0  # in place would change every sharer: refused
    doc, npz = serialize.dumps(c)
    assert sorted(zipfile.ZipFile(io.BytesIO(npz)).namelist()) == ["a/weight.npy"]
    back = serialize.loads(doc, npz)
    assert back["a"].params["weight"] is back["b"].params["weight"]
    assert np.array_equal(back["b"].params["weight"], w)
    assert serialize.dumps(back) == (doc, npz)


def test_dead_after_frees_each_value_after_its_last_reader():
    from snncc.ir.analysis import dead_after, value_numbers

    g = small_graph()  # x -> c -> f -> p -> r -> l -> out
    assert dead_after(g) == {"c": ["x"], "f": ["c"], "p": ["f"], "r": ["p"], "l": ["r"], "out": ["l"]}
    w = np.ones((2, 2))
    h = Graph([Node("x", "input", [], {"shape": (2,)}),
               Node("a", "linear", ["x"], {}, {"weight": w}),
               Node("b", "linear", ["x"], {}, {"weight": w.copy()}),  # a copy of a: reads a's value
               Node("s", "add", ["a", "b"]), Node("o", "output", ["s"])]).infer()
    same = value_numbers(h)
    # b reuses a's value instead of reading x, so x dies right after a
    assert dead_after(h, same) == {"a": ["x"], "s": ["a", "b"], "o": ["s"]}


def test_folded_weights_are_stored_as_the_models_weights_times_their_factors():
    """A weight the passes folded (w * k per channel, then * 1/D) is stored as the model's float32
    array (once, in the traced archive) plus the float64 factors; loading recomputes the same bits."""
    import io
    import zipfile

    from snncc.ir import derived

    w = np.array([[0.1, -0.7], [0.3, 0.25], [1.5, 2.0]], dtype=np.float32).astype(np.float64)
    k = np.array([1 / 3, 0.7, 1.1])[:, None]  # not float32-exact: the product is float64 only
    folded = derived.scaled(derived.scaled(w, k), 1 / 7)
    assert np.array_equal(folded, (w * k) * (1 / 7))

    def graph(weight):
        return Graph([Node("x", "input", [], {"shape": (2,)}), Node("a", "linear", ["x"], {}, {"weight": weight}),
                      Node("o", "output", ["a"])]).infer()

    files = serialize.dumps_set([("traced", graph(w)), ("ir", graph(folded))])
    assert serialize.dumps_set([("traced", graph(w)), ("ir", graph(folded))]) == files  # deterministic
    doc = json.loads(files["ir.json"])
    assert doc["nodes"][1]["params"]["weight"] == {"file": "traced.npz", "key": "a/weight",
                                                   "times": ["a/weight.x0", "a/weight.x1"]}
    tr = zipfile.ZipFile(io.BytesIO(files["traced.npz"]))
    assert tr.namelist() == ["a/weight.npy"] and tr.getinfo("a/weight.npy").file_size == 128 + 6 * 4  # float32
    ir = np.load(io.BytesIO(files["ir.npz"]))
    assert sorted(ir.files) == ["a/weight.x0", "a/weight.x1"] and ir["a/weight.x0"].shape == (3, 1)
    archives = {}
    traced = serialize.loads(files["traced.json"], files["traced.npz"], archives=archives, file="traced.npz")
    back = serialize.loads(files["ir.json"], files["ir.npz"], other=files.__getitem__, archives=archives)
    got = back["a"].params["weight"]
    assert got.dtype == np.float64 and np.array_equal(got.view(np.uint64), folded.view(np.uint64))
    assert archives["traced.npz"]["a/weight"] is traced["a"].params["weight"]  # one copy of the model's weights
    assert serialize.dumps_set([("traced", traced), ("ir", back)]) == files  # reloaded: the same bytes
    with pytest.raises(LoadError, match="names another archive"):
        serialize.loads(files["ir.json"], files["ir.npz"])  # alone, it cannot find the model's weights
    # an array that is not the recorded product (changed after the fact) is stored itself, never a wrong chain
    rogue = derived.scaled(w, k)
    derived.record(rogue, w, (np.array(2.0),))
    d2, n2 = serialize.dumps(graph(rogue))
    assert json.loads(d2)["nodes"][1]["params"]["weight"] == "a/weight"
    assert np.array_equal(serialize.loads(d2, n2)["a"].params["weight"], rogue)
