"""Sharding a data set over worker processes, for `estimate` and `simulate`: the batches of an
`InputBatches` are split into contiguous runs, each worker observes its run with its own
statistics object (an `Estimator`, or a sim.tally.SimTally) and sends back its `state()`, which
are merged in run order (`merge`). Spike counts, SOPs, coincidences, differing counts, agreeing
and correct predictions and sample counts are sums of integers and peaks are maxima, so the
merged statistics equal one process's exactly.

Two executors behind one interface, `map_batches(...)` (`snncc.estimate.estimator.run_sharded`
is it with an `Estimator`):
- `local`: `concurrent.futures.ProcessPoolExecutor` (standard library, spawned processes);
- `ray`: Ray tasks (the optional extra `pip install ray`), on a local Ray instance or on the
  cluster at `address` (e.g. "ray://head:10001" or "auto").
Each worker reads its own batches from the data set (a folder of shards, a file, or the seeded
random inputs, regenerated identically), so no input array crosses a process boundary.
"""

from __future__ import annotations

from snncc.errors import SnnccError


def _runs(n: int, workers: int) -> list[range]:
    """n batch indices as at most `workers` contiguous, non-empty runs."""
    k = max(1, min(workers, n))
    cuts = [round(i * n / k) for i in range(k + 1)]
    return [range(cuts[i], cuts[i + 1]) for i in range(k) if cuts[i + 1] > cuts[i]]


def _work(make, graph, data, samples, batch_size, seed, indices, device=None, layout="auto"):
    """One worker: `make(graph)` observes the batches `indices`; their statistics come back."""
    from snncc.data.inputs import InputBatches
    from snncc.sim.device import use as use_device

    batches = InputBatches(graph, data, samples, batch_size, seed, layout)
    with use_device(device):
        stats = make(graph).run(batches.with_labels(indices))
    return stats.state()


def map_batches(make, graph, data, samples: int | None, batch_size: int | None, seed: int, workers: int,
                address: str | None = None, progress: bool = False, device: str | None = None,
                desc: str = "estimate", layout: str = "auto"):
    """`make(graph)` (a picklable callable: a statistics object with observe/state/merge) holding
    the statistics of every batch, observed by `workers` processes (Ray when `address` is given,
    else local processes) and merged in batch order."""
    from snncc.data.inputs import InputBatches

    n = len(InputBatches(graph, data, samples, batch_size, seed, layout))
    args = [(make, graph, data, samples, batch_size, seed, list(r), device, layout) for r in _runs(n, workers)]
    states = _ray(args, address, progress, desc) if address else _local(args, workers, progress, desc)
    stats = make(graph)
    for st in states:
        stats.merge(st)
    return stats


def _bar(total: int, progress: bool, desc: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="shard")


def _ignore_interrupts() -> None:
    """Pool workers leave Ctrl-C (sent to the whole process group) to the parent, which ends them."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _end_workers(pool) -> None:
    """Stop a pool's processes now (Ctrl-C, SIGTERM or an error in the parent), not after their
    current shard: `shutdown` alone waits for running work."""
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            p.terminate()
        except (OSError, AttributeError):
            pass
    pool.shutdown(wait=True, cancel_futures=True)


def _local(args, workers: int, progress: bool, desc: str) -> list[dict]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    bar = _bar(len(args), progress, desc)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(args)), mp_context=mp.get_context("spawn"),
                               initializer=_ignore_interrupts)
    try:
        futs = {pool.submit(_work, *a): i for i, a in enumerate(args)}
        out: list = [None] * len(args)
        for f in as_completed(futs):
            out[futs[f]] = f.result()
            if bar is not None:
                bar.update(1)
    except BaseException:
        _end_workers(pool)
        raise
    pool.shutdown(wait=True)
    if bar is not None:
        bar.close()
    return out


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Refuse, in one line and within `timeout` seconds, a Ray address that is not `local`, `auto`
    or a reachable `[ray://]host:port` (Ray's own `init` waits minutes on a dead address)."""
    import socket

    if address in ("local", "auto"):
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SnnccError(f"not a Ray address: {address!r}", where="--ray-address",
                         hint="use local, auto, host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise SnnccError(f"cannot reach a Ray head at {address!r} within {timeout:g} s ({e.strerror or e})",
                         where="--ray-address", hint="start the cluster, or check the address") from None


def _ray(args, address: str, progress: bool, desc: str) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise SnnccError("--ray-address needs Ray", where="--ray-address",
                         hint="pip install ray (the optional extra snncc[ray]), or use --workers N alone") from None
    started = not ray.is_initialized()
    if started:
        check_ray_address(address)
        if address == "local":
            ray.init(num_cpus=len(args), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(_work)
        refs = [task.remote(*a) for a in args]
        bar = _bar(len(refs), progress, desc)
        pending, index = list(refs), {r: i for i, r in enumerate(refs)}
        out: list = [None] * len(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            out[index[ready[0]]] = ray.get(ready[0])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return out
    finally:
        if started:
            ray.shutdown()
