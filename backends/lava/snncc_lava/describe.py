"""The Loihi artefact: a deterministic JSON description of the Lava network plus its arrays.

`network.json` lists every process (neuron populations, max pools (LIF), spike products, Sparse/DelaySparse
synapses with their relays, host input sources, the read-out) with shapes, parameters and how they
connect; every array (weights as CSR triplets data/indices/indptr, constant currents, operand index
maps) lives in `weights.npz` under the keys the JSON names (`load_weight` rebuilds a matrix). A
fixed_pt description stores integers compactly (docs/formats.md): one-kernel projections as their
int8 kernel (`load_kernel`), never an expanded matrix; the rest as int8 CSR; with weight_bits=16 a
synapse entry's `low` names its second group (the low mantissas, stored the same way, and their
weight_exp). Both are byte-for-byte reproducible: keys sorted,
arrays written with a fixed zip timestamp. With a `fixed.QNetwork` the description is the fixed_pt
network (integer mantissas and exponents, run with select_tag='fixed_pt') and
`quantisation.json` carries the quantisation report.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import scipy.sparse as sp

from snncc_lava.network import Network, relay_delays

FORMAT = "snncc-lava-network/2"  # /2: CSR weights, Sparse synapses, Recorder read-out
_EPOCH = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for key in sorted(arrays):
            a = io.BytesIO()
            np.lib.format.write_array(a, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, a.getvalue())
    return buf.getvalue()


def describe(net: Network, emit: str = "burst", versions: dict | None = None, qnet=None) -> tuple[dict, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    procs = []
    for p in net.populations.values():
        entry = {"name": p.name, "process": "snncc_lava.procs.process.WindowBurstIF",
                 "model": "PyWindowBurstIFModelFloat", "shape": [p.size], "ir_shape": list(p.shape),
                 "D": p.D, "theta": p.theta, "beta": p.beta, "stateful": p.stateful, "emit": emit,
                 "level": p.level, "start": p.start, "bias": f"{p.name}.bias", "const": f"{p.name}.const"}
        if p.relay:  # a residual-stream relay: one graded message of its window value
            entry.update(relay=True, emit="graded")
        if p.leak != 1.0:  # the carried residual's factor between windows (WindowBurstIF.leak)
            entry["leak"] = p.leak
        if qnet is None:
            arrays[f"{p.name}.bias"] = p.bias
            arrays[f"{p.name}.const"] = p.const
        else:
            q = qnet.populations[p.name]
            arrays[f"{p.name}.bias_mant"] = q.bias_mant.astype(np.int16)  # 13-bit signed
            for k in ("theta", "beta", "bias", "const"):
                del entry[k]
            entry.update(model="PyWindowBurstIFModelFixed", vth=q.vth, bias_mant=f"{p.name}.bias_mant",
                         bias_exp=q.bias_exp, v_init=q.v_init, scale=q.scale)
        procs.append(entry)
        if p.host_input:
            procs.append({"name": f"{p.name}.source", "process": "lava.proc.io.source.RingBuffer",
                          "shape": [p.size], "feeds": f"{p.name}.a_in",
                          "data": "host encoding current, one column per window at step start + w*D + 1"})
    for pp in net.products.values():
        ops = []
        for i, o in enumerate(pp.operands):
            key = f"{pp.name}.index{i}"
            arrays[key] = o.index
            ops.append({"source": f"{o.source}.s_out", "port": f"a_in{i}", "shape": list(o.shape), "index": key})
        procs.append({"name": pp.name, "process": "snncc_lava.procs.process.SpikeProduct",
                      "model": "PySpikeProductModelFloat" if qnet is None else "PySpikeProductModelFixed",
                      "shape": [pp.size], "ir_shape": list(pp.shape),
                      "order": pp.order, "scale": pp.scale, "level": pp.level, "start": pp.start,
                      "operands": ops, "emit": "graded, one message at step start + (w+2)*D" +
                      ("" if qnet is None else "; fixed_pt sends the raw integer product, scale folded into its projections")})
    bits = 8 if emit == "graded" else 0
    if net.spike_input is not None:
        si = net.spike_input
        procs.append({"name": f"{si.name}.source", "process": "lava.proc.io.source.RingBuffer", "shape": [si.size],
                      "ir_shape": list(si.shape), "level": si.level, "start": si.start, "emit": emit,
                      "data": "host spike input: count c of window w as spikes in the first c sub-steps of steps "
                              "start + (w+1)*D + 1 .. start + (w+2)*D (graded: one message of payload c)"})
    synapses = 0
    for mp in net.pools.values():  # a max pool: its sum-pool synapse (delay D) into LIF neurons (network.MaxPool)
        key = f"{mp.name}.pool"
        w = mp.weight
        arrays[key + ".indices"], arrays[key + ".indptr"] = w.indices.astype(np.int32), w.indptr.astype(np.int64)
        if qnet is None:
            arrays[key + ".data"] = w.data
            weight = {"format": "csr", "data": key + ".data", "indices": key + ".indices", "indptr": key + ".indptr"}
            lif = {"model": "PyLifModelFloat", "du": 1.0, "dv": 1.0, "vth": 0.5}
        else:  # mantissa 2, weight_exp 0: one spike is 2 << 6 membrane units against vth 1 << 6
            arrays[key + ".data"] = np.ones(w.nnz, np.int8)
            weight = {"format": "csr-half-mantissa", "data": key + ".data", "indices": key + ".indices",
                      "indptr": key + ".indptr"}
            lif = {"model": "PyLifModelBitAcc", "du": 4095, "dv": 4095, "vth": 1, "weight_exp": 0}
        src = f"{mp.source}.source.s_out" if net.spike_input is not None and mp.source == net.spike_input.name \
            else f"{mp.source}.s_out"
        hops, own = relay_delays(net.D)
        procs.append({"name": f"{mp.name}.pool", "process": "lava.proc.sparse.process.DelaySparse",
                      "shape": [mp.size, net.source_size(mp.source)], "source": src, "target": f"{mp.name}.a_in",
                      "num_message_bits": 0, "delay": net.D, "weight": weight, "nonzero": int(w.nnz),
                      **({"relays": [{"process": "lava.proc.sparse.process.DelaySparse", "weights": "identity",
                                      "delay": d} for d in hops], "delay_own": own} if hops else {})})
        procs.append({"name": mp.name, "process": "lava.proc.lif.process.LIF", **lif, "bias_mant": 0,
                      "shape": [mp.size], "ir_shape": list(mp.shape), "level": mp.level, "start": mp.start,
                      "max_pool": f"of {mp.source}: fires on any input spike, each step (max of the window's "
                                  f"burst counts)", "emit": emit})
    for i, pr in enumerate(net.projections):
        key = f"proj{i}.{pr.source}->{pr.target}.weight"
        n_src = net.source_size(pr.source)
        n_tgt = int(np.prod(net.output_shape)) if pr.target == "output" else net.populations[pr.target].size
        if qnet is None:
            w = pr.weight.tocsr()
            arrays[key + ".data"], arrays[key + ".indices"], arrays[key + ".indptr"] = w.data, w.indices, w.indptr
            weight = {"format": "csr", "data": key + ".data", "indices": key + ".indices", "indptr": key + ".indptr"}
            extra = {"nonzero": int(w.nnz)}
            synapses += int(w.nnz)
        else:
            weight, extra = _fixed_weight(qnet.projections[i], key, arrays)
        hops, own = relay_delays(pr.delay)
        src = f"{pr.source}.source.s_out" if net.spike_input is not None and pr.source == net.spike_input.name \
            else f"{pr.source}.s_out"
        entry = {"name": f"proj{i}", "process": "lava.proc.sparse.process." + ("DelaySparse" if own else "Sparse"),
                 "shape": [n_tgt, n_src], "source": src,
                 "target": f"{pr.target}.a_in" if pr.target != "output" else "recorder (read-out)",
                 "num_message_bits": 8 if pr.source in net.products or hops else bits, "delay": pr.delay,
                 "weight": weight, **extra, "ir_nodes": pr.nodes}
        if hops:
            entry["relays"] = [{"process": "lava.proc.sparse.process.DelaySparse", "weights": "identity",
                                "delay": d} for d in hops]
            entry["delay_own"] = own
        if qnet is not None:
            qp = qnet.projections[i]
            entry.update(weight_exp=qp.exp, num_weight_bits=8, sign_mode="MIXED")
            if qp.low is not None:  # weight_bits=16: a second synapse process, same source and target port
                low, low_extra = _fixed_weight(qp.low, key + ".low", arrays)
                entry["low"] = {"name": f"proj{i}.low", "process": entry["process"], "shape": entry["shape"],
                                "source": src, "target": entry["target"], "delay": pr.delay, "weight": low,
                                "weight_exp": qp.low.exp, "num_weight_bits": 8, "sign_mode": "MIXED", **low_extra}
        procs.append(entry)
    arrays["output.const"] = net.output_const
    procs.append({"name": "output", "process": "snncc_lava.procs.process.Recorder (read-out input)",
                  "shape": [int(np.prod(net.output_shape))], "ir_shape": list(net.output_shape),
                  "start": net.output_start, "const": "output.const", "host_input": net.output_host,
                  "readout": "read-out synapses' a_out summed per window"})
    if qnet is not None:
        procs[-1]["scale"] = qnet.output_scale
        procs[-1]["dequantise"] = "window sum / scale + const (+ host current)"
    tag = "fixed_pt" if qnet is not None else "floating_pt"
    doc = {"format": FORMAT, "versions": versions or {}, "run_config": f"Loihi2SimCfg(select_tag='{tag}')",
           "precision": "fixed" if qnet is not None else "float",
           "D": net.D, "T": net.T, "schedule": "exact: window of D sub-steps per timestep, level l starts at l*(D+1)",
           "steps_per_sample": f"{net.output_start} + T*D*B (+1)", "processes": procs,
           **({"synapses": synapses} if qnet is None else
              {"kernel_weights": int(sum(g.kernel.size if g.kernel is not None else g.matrix.nnz
                                         for p in qnet.projections for g in (p, p.low) if g is not None)),
               "weight_bits": qnet.report.get("weight_bits", 8)}),
           "recorder": "snncc_lava.procs.process.Recorder: every population's s_out and the read-out synapses, "
                       "counts summed per sample, read-out per window, handed over in one message"}
    return doc, arrays


def _fixed_weight(qp, key: str, arrays: dict) -> tuple[dict, dict]:
    """A fixed_pt synapse's integers, compact (docs/formats.md): a one-kernel projection stores its
    kernel (half mantissas as int8: mantissas are even in [-256, 254]) and the IR ops that make it
    a matrix; the others a CSR matrix with int8 half mantissas and int32 indices."""
    if qp.kernel is not None:
        arrays[key + ".kernel"] = (qp.kernel // 2).astype(np.int8)
        path = qp.path
        return ({"format": "kernel", "half_mantissas": key + ".kernel", "kernel_shape": list(qp.kernel.shape),
                 "ir_node": path.op.name if path.op is not None else None, "factor": path.factor,
                 "chain": [n.name for n in path.chain]},
                {"kernel_nonzero": int(np.count_nonzero(qp.kernel))})
    w = qp.matrix
    arrays[key + ".data"] = (w.data // 2).astype(np.int8)
    arrays[key + ".indices"] = w.indices.astype(np.int32)
    arrays[key + ".indptr"] = w.indptr.astype(np.int64)
    return ({"format": "csr-half-mantissa", "data": key + ".data", "indices": key + ".indices",
             "indptr": key + ".indptr"}, {"nonzero": int(w.nnz)})


def load_weight(npz, entry: dict, graph=None) -> sp.csr_matrix:
    """The weight matrix of a synapse entry of network.json (float "csr"; fixed_pt
    "csr-half-mantissa" and "kernel": int32 mantissas), from the opened weights.npz; a kernel entry
    is composed from its stored integers along its IR chain, so it needs the deployed `graph`."""
    w = entry["weight"]
    if w["format"] == "kernel":
        if graph is None:
            raise ValueError(f"{entry['name']} stores a kernel: its matrix needs the IR graph (or use load_kernel)")
        from snncc_lava.network import KernelPath

        leaf = entry["source"].removesuffix(".s_out").removesuffix(".source")
        path = KernelPath(tuple(graph[leaf].shape), [graph[n] for n in w["chain"]],
                          graph[w["ir_node"]] if w["ir_node"] else None, float(w["factor"]))
        m = path.matrix(graph, load_kernel(npz, entry))
        q = sp.csr_matrix((np.rint(m.data).astype(np.int32), m.indices, m.indptr), shape=m.shape)
        q.eliminate_zeros()
        return q
    data = npz[w["data"]]
    if w["format"] == "csr-half-mantissa":
        data = data.astype(np.int32) * 2
    return sp.csr_matrix((data, npz[w["indices"]], npz[w["indptr"]]), shape=tuple(entry["shape"]))


def load_kernel(npz, entry: dict) -> np.ndarray:
    """The int32 kernel mantissas of a fixed_pt one-kernel synapse entry (2 x the stored int8)."""
    return npz[entry["weight"]["half_mantissas"]].astype(np.int32) * 2


def files(net: Network, emit: str = "burst", versions: dict | None = None, qnet=None) -> dict[str, bytes]:
    doc, arrays = describe(net, emit, versions, qnet)
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    out = {"lava/network.json": text.encode(), "lava/weights.npz": npz_bytes(arrays)}
    if qnet is not None:
        from snncc_lava.fixed import report_json
        out["lava/quantisation.json"] = (json.dumps(report_json(qnet), indent=1, sort_keys=True) + "\n").encode()
    return out
