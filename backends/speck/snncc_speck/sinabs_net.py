"""sinabs_net: Speck layers as a real sinabs network, and its deterministic JSON + npz file.

Each layer is `SumPool2d(k)` (k > 1, source-side pooling) -> `nn.Conv2d` -> `sinabs.layers.IAFSqueeze`
with subtractive reset (`MembraneSubtract()`), threshold theta and a spike function that fires
floor(v / theta) spikes per step: `MaxSpike(D)` (sinabs' MultiSpike with the cap D of the deployed
neuron; the readout has no cap and uses `MultiSpike`). The membrane starts at the layer's initial
value (beta: half a threshold after round_to_floor), which is what samna's
`neurons_initial_value` holds. A binary hard-reset layer (spec "reset": "zero", lowered with threshold
theta - beta and initial membrane 0) resets with `MembraneReset(0)`, Speck's `return_to_zero`. This is the *ideal* policy of docs/design.md §3 (fire floor(V/theta), at
most D, once the step's input is in); Speck itself emits one spike per input event.

A merge layer (several sources, `SpeckLayer.merge`) pools each source's spikes with its own
`SumPool2d` and adds them with `sinabs.layers.Merge` before its one conv, as sinabs'
`DynapcnnNetworkModule` does for a layer with several inputs.

The network takes (B*T, C, H, W), batch-major (row b*T + t), like sinabs' squeezed layers, and
every forward call runs one complete sequence from the initial membranes. `sinabs.backend.dynapcnn`
is never imported here (it imports samna at import time).
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import torch
import torch.nn as nn
from snncc_speck.lower import Lowered

FORMAT = "snncc-speck-sinabs/1"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def network_spec(low: Lowered, T: int, quant: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON-able description and the arrays of the sinabs network; `quant` (layer -> LayerQuant)
    gives the chip integers, None keeps the deployed graph's float values."""
    layers, arrays = [], {}
    for i, lay in enumerate(low.layers):
        key = f"layer{i}"
        q = quant[lay.name] if quant else None
        w = q.weight.astype(np.float64) if q else lay.weight
        b = (None if q.bias is None else q.bias.astype(np.float64)) if q else lay.bias
        v0 = float(q.initial_membrane) if q else lay.beta
        arrays[f"{key}.weight"] = np.ascontiguousarray(w)
        if b is not None:
            arrays[f"{key}.bias"] = np.ascontiguousarray(b)
        layers.append({
            "name": lay.name, "key": key, "source": lay.source, "pool": lay.pool,
            "merge": [{"source": s, "pool": p} for s, p in lay.merge],
            "in_shape": list(lay.in_shape), "out_shape": list(lay.out_shape),
            "kernel_size": list(lay.kernel), "stride": list(lay.stride), "padding": list(lay.padding),
            "bias": b is not None,
            "spike_threshold": float(q.threshold) if q else lay.theta,
            "initial_membrane": v0,
            "min_v_mem": float(q.lower_bound) if q else None,
            "max_spikes_per_step": lay.D,
            "reset": lay.reset,
            "scale": q.scale if q else 1.0,
            "readout": lay.readout,
        })
    spec = {"format": FORMAT, "T": int(T), "quantised": quant is not None,
            "input": {"name": low.input_name, "shape": list(low.input_shape)},
            "output": low.output_layer, "layers": layers}
    return spec, arrays


class SpeckNetwork(nn.Module):
    """The sinabs network of a spec. `forward(x)` returns the output layer's spikes (B*T, ...);
    `self.spikes` holds every layer's spikes of the last call (by layer name)."""

    def __init__(self, spec: dict, arrays: dict[str, np.ndarray], dtype: torch.dtype = torch.float32):
        # sinabs is imported here, not with the module: its import pulls matplotlib's pylab (about 1 s),
        # which a compile or a non-sinabs simulation of a Speck artefact does not need
        from sinabs.activation import MaxSpike, MembraneReset, MembraneSubtract, MultiSpike
        from sinabs.layers import IAFSqueeze, Merge, SumPool2d

        super().__init__()
        if spec.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} network description (format {spec.get('format')!r})")
        self.spec = spec
        self.T = int(spec["T"])
        self.cores = nn.ModuleDict()
        self.merge_pools = nn.ModuleDict()  # merge layers: one pooling per source
        self.merge = Merge()
        self.order: list[tuple[str, str, str]] = []  # (name, key, source)
        self.sources: dict[str, list[str]] = {}  # merge layers: every source, first = `source`
        self.initial: dict[str, torch.Tensor] = {}
        for L in spec["layers"]:
            mods: list[nn.Module] = []
            merge = L.get("merge") or []
            if merge:
                pools = [L["pool"]] + [m["pool"] for m in merge]
                self.merge_pools[L["key"]] = nn.ModuleList(SumPool2d(p) if p > 1 else nn.Identity() for p in pools)
                self.sources[L["key"]] = [L["source"]] + [m["source"] for m in merge]
            elif L["pool"] > 1:
                mods.append(SumPool2d(L["pool"]))
            conv = nn.Conv2d(L["in_shape"][0], L["out_shape"][0], tuple(L["kernel_size"]), tuple(L["stride"]),
                             tuple(L["padding"]), bias=L["bias"])
            with torch.no_grad():
                conv.weight.copy_(torch.as_tensor(arrays[f"{L['key']}.weight"]))
                if L["bias"]:
                    conv.bias.copy_(torch.as_tensor(arrays[f"{L['key']}.bias"]))
            cap = L["max_spikes_per_step"]
            mods.append(conv)
            mods.append(IAFSqueeze(num_timesteps=self.T, spike_threshold=torch.tensor(L["spike_threshold"]),
                                   spike_fn=MaxSpike(cap) if cap is not None else MultiSpike,
                                   reset_fn=MembraneReset(0.0) if L.get("reset") == "zero" else MembraneSubtract(),
                                   min_v_mem=L["min_v_mem"]))
            self.cores[L["key"]] = nn.Sequential(*mods)
            self.order.append((L["name"], L["key"], L["source"]))
            self.initial[L["name"]] = torch.tensor(L["initial_membrane"])
        self.to(dtype)
        self.spikes: dict[str, torch.Tensor] = {}

    def reset_states(self, batch: int, dtype: torch.dtype) -> None:
        for (name, key, _), L in zip(self.order, self.spec["layers"]):
            spk = self.cores[key][-1]
            shape = (batch,) + tuple(L["out_shape"])
            spk.init_state_with_shape(shape)
            spk.v_mem = torch.full(shape, float(self.initial[name]), dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.T:
            raise ValueError(f"input has {x.shape[0]} rows, not a multiple of T={self.T} (pass (B*T, C, H, W))")
        x = x.reshape((x.shape[0],) + tuple(self.spec["input"]["shape"]))
        self.reset_states(x.shape[0] // self.T, x.dtype)
        env = {self.spec["input"]["name"]: x}
        for name, key, source in self.order:
            # sinabs spike functions return float32 counts (exact small integers): cast back
            if key in self.sources:  # merge: pool every source, add the spike maps, one kernel
                maps = [p(env[s].to(x.dtype)) for p, s in zip(self.merge_pools[key], self.sources[key])]
                inp = maps[0]
                for m in maps[1:]:
                    inp = self.merge(inp, m)
                env[name] = self.cores[key](inp)
            else:
                env[name] = self.cores[key](env[source].to(x.dtype))
        self.spikes = {name: env[name] for name, _, _ in self.order}
        return env[self.spec["output"] or self.order[-1][0]]

    def counts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Spike counts per layer summed over time: (B, *out_shape), like the reference executor's."""
        with torch.no_grad():
            self.forward(x)
        return {n: s.reshape((-1, self.T) + tuple(s.shape[1:])).sum(1) for n, s in self.spikes.items()}


def to_batch_major(x: torch.Tensor) -> torch.Tensor:
    """(T, B, ...) as used by snncc's reference executor -> (B*T, ...) batch-major for sinabs."""
    return x.transpose(0, 1).reshape((-1,) + tuple(x.shape[2:]))


def dumps(spec: dict, arrays: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    """Deterministic bytes: sorted JSON, an npz with fixed zip timestamps and sorted members."""
    doc = json.dumps(spec, indent=1, sort_keys=True).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for k in sorted(arrays):
            b = io.BytesIO()
            np.lib.format.write_array(b, np.ascontiguousarray(arrays[k]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{k}.npy", date_time=_ZIP_DATE), b.getvalue())
    return doc, buf.getvalue()


def loads(doc: bytes, npz: bytes, dtype: torch.dtype = torch.float32) -> SpeckNetwork:
    spec = json.loads(doc)
    with np.load(io.BytesIO(npz), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return SpeckNetwork(spec, arrays, dtype)
