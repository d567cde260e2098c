"""The Loihi artefact: a deterministic JSON description of the Lava network plus its arrays.

`network.json` lists every process (neuron populations, spike products, synapses, host input
sources, sinks) with shapes, parameters and how they connect; every array (weights, constant
currents, operand index maps) lives in `weights.npz` under the key the JSON names. Both are byte-for-byte reproducible: keys sorted,
arrays written with a fixed zip timestamp. With a `fixed.QNetwork` the description is the fixed_pt
network (integer mantissas and exponents, run with select_tag='fixed_pt') and
`quantisation.json` carries the quantisation report.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from snncc_lava.network import Network

FORMAT = "snncc-lava-network/1"
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
        if qnet is None:
            arrays[f"{p.name}.bias"] = p.bias
            arrays[f"{p.name}.const"] = p.const
        else:
            q = qnet.populations[p.name]
            arrays[f"{p.name}.bias_mant"] = q.bias_mant
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
                      "model": "PySpikeProductModelFloat", "shape": [pp.size], "ir_shape": list(pp.shape),
                      "order": pp.order, "scale": pp.scale, "level": pp.level, "start": pp.start,
                      "operands": ops, "emit": "graded, one message at step start + (w+2)*D"})
    bits = 8 if emit == "graded" else 0
    for i, pr in enumerate(net.projections):
        key = f"proj{i}.{pr.source}->{pr.target}.weight"
        w = pr.weight if qnet is None else qnet.projections[i].weight
        arrays[key] = w
        nnz = int(np.count_nonzero(w))
        entry = {"name": f"proj{i}", "process": "lava.proc.dense.process." + ("DelayDense" if pr.delay else "Dense"),
                 "shape": list(w.shape), "source": f"{pr.source}.s_out",
                 "target": f"{pr.target}.a_in" if pr.target != "output" else "output.sink.a_in",
                 "num_message_bits": 8 if pr.source in net.products else bits, "delay": pr.delay, "weight": key, "nonzero": nnz,
                 "ir_nodes": pr.nodes}
        if qnet is not None:
            entry.update(weight_exp=qnet.projections[i].exp, num_weight_bits=8, sign_mode="MIXED")
        procs.append(entry)
    arrays["output.const"] = net.output_const
    procs.append({"name": "output.sink", "process": "lava.proc.io.sink.RingBuffer",
                  "shape": [int(np.prod(net.output_shape))], "ir_shape": list(net.output_shape),
                  "start": net.output_start, "const": "output.const", "host_input": net.output_host})
    if qnet is not None:
        procs[-1]["scale"] = qnet.output_scale
        procs[-1]["dequantise"] = "window sum / scale + const (+ host current)"
    tag = "fixed_pt" if qnet is not None else "floating_pt"
    doc = {"format": FORMAT, "versions": versions or {}, "run_config": f"Loihi2SimCfg(select_tag='{tag}')",
           "precision": "fixed" if qnet is not None else "float",
           "D": net.D, "T": net.T, "schedule": "exact: window of D sub-steps per timestep, level l starts at l*(D+1)",
           "steps_per_sample": f"{net.output_start} + T*D*B (+1)", "processes": procs,
           "synapses": int(sum(np.count_nonzero(p.weight) for p in net.projections))}
    return doc, arrays


def files(net: Network, emit: str = "burst", versions: dict | None = None, qnet=None) -> dict[str, bytes]:
    doc, arrays = describe(net, emit, versions, qnet)
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    out = {"lava/network.json": text.encode(), "lava/weights.npz": npz_bytes(arrays)}
    if qnet is not None:
        from snncc_lava.fixed import report_json
        out["lava/quantisation.json"] = (json.dumps(report_json(qnet), indent=1, sort_keys=True) + "\n").encode()
    return out
