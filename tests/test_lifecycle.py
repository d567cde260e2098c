"""The `snncc` process under real signals, pipes and devices (snncc.console, the worker pools):
Ctrl-C while torch is still importing, SIGTERM to a run with worker processes, a reader that
closes the pipe early, a full device behind standard output, and a Ray address that leads
nowhere: these run the installed console script, as a user's shell would. So do the outputs whose
behaviour is the process's (a pipe behind /dev/stdout, a full device, a lock another process
waits on, a read-only mount), and one case of each kind of refusal; the other cases vary only what
the library writes or refuses and run `snncc.cli.main` in this process (the snncc_main fixture),
which saves a torch import each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nets import ConvChain, randomize_bn

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    t = tmp_path_factory.mktemp("lifecycle")
    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    torch.export.save(torch.export.export(m.eval(), (torch.zeros(1, 2, 8, 8),)), t / "conv.pt2")
    r = subprocess.run([EXE, "compile", str(t / "conv.pt2"), "-o", str(t / "art")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return t


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (read from /proc: children of children too)."""
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        out.update(kids)
        todo.extend(kids)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _importing_torch(pid: int, timeout: float = 300.0) -> bool:
    """Wait until process `pid` has loaded torch's C++ library: it is inside `import torch` (which goes
    on for about a second more), so past the interpreter's start, however busy the machine is."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/maps") as f:
                if "libtorch_cpu" in f.read():
                    return True
        except OSError:
            return False
        time.sleep(0.005)
    return False


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child before it starts: Ctrl-C's default action, as a terminal's shell gives the command
    it runs. A non-interactive shell starts a background job with SIGINT ignored, and a child inherits
    that (a test run started with `&` passed it on: snncc, rightly, did not hear the signal and exited 0)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_importing_is_one_line_and_130():
    for _ in range(5):
        p = subprocess.Popen([EXE, "targets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=_ctrl_c_as_in_a_terminal)
        # not a fixed sleep: on a loaded machine the interpreter may not have reached snncc's handlers yet;
        # `snncc targets` ends about 1.3 s after torch's library is mapped on an idle core (later, the
        # interpreter's shutdown has put back the default action: killed by SIGINT, -2; later still, exit 0)
        assert _importing_torch(p.pid), p.communicate()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        if p.returncode == 0 and err == "" and out:
            continue  # the command had finished before the signal came (a busy machine): try again
        assert p.returncode == 130, err
        assert err == "snncc: interrupted\n"
        return
    pytest.fail("`snncc targets` finished before SIGINT reached it five times")


def test_sigterm_ends_the_worker_pool_and_exits_143(art):
    # enough batches that the two workers are still busy when the signal comes
    np.save(art / "many.npy", np.random.default_rng(0).random((20000, 2, 8, 8)).astype(np.float32))
    p = subprocess.Popen([EXE, "estimate", str(art / "art"), "--data", str(art / "many.npy"), "--samples", "20000",
                          "--batch-size", "4", "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline, kids = time.time() + 120, set()
    while time.time() < deadline and len(kids) < 2:  # two workers (and the resource tracker) started
        time.sleep(0.2)
        kids = _descendants(p.pid)
        assert p.poll() is None, p.communicate()
    time.sleep(2.0)  # the workers are now importing torch or working on a shard
    kids |= _descendants(p.pid)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 143, err
    assert err == "snncc: terminated\n"
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)], "worker processes outlived snncc"


def test_reader_closing_the_pipe_early_is_quiet(art):
    p = subprocess.Popen([EXE, "inspect", str(art / "art")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # `snncc inspect out | head -0`: nobody reads
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert p.returncode == 141
    assert err == ""


def test_full_device_behind_stdout_is_one_line(art):
    with open("/dev/full", "w") as full:
        r = subprocess.run([EXE, "inspect", str(art / "art")], stdout=full, stderr=subprocess.PIPE, text=True,
                           timeout=120)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("snncc: error: 'standard output': No space left on device")


def _estimate(art, argv, installed, snncc_main, **kw):
    """`snncc estimate ART ARGV` through the installed command or in this process: (code, stderr)."""
    if installed:
        r = subprocess.run([EXE, "estimate", str(art / "art"), *map(str, argv)], capture_output=True, text=True,
                           timeout=300, **kw)
        return r.returncode, r.stderr
    code, _, err = snncc_main("estimate", art / "art", *argv)
    return code, err


@pytest.mark.parametrize("address, what, installed", [
    ("not an address", "not a Ray address: 'not an address'", False),
    ("127.0.0.1:1", "cannot reach a Ray head at '127.0.0.1:1' within 5 s", True)])
def test_ray_address_that_leads_nowhere_is_refused_in_seconds(art, address, what, installed, snncc_main):
    t0 = time.time()
    code, err = _estimate(art, ["--samples", "4", "--ray-address", address], installed, snncc_main)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"snncc: error: --ray-address: {what}")
    assert time.time() - t0 < 60


# --- outputs snncc does not own: one writer (artifact.write_bytes) for every output file ---------


def _one_error_line(stderr: str, what: str) -> bool:
    """Exactly one `snncc: error:` line, holding `what`, and no traceback."""
    errors = [ln for ln in stderr.splitlines() if ln.startswith("snncc: error: ")]
    return len(errors) == 1 and what in errors[0] and "Traceback" not in stderr


def _estimate_json(art, dest, **kw):
    return subprocess.run([EXE, "estimate", str(art / "art"), "--samples", "2", "--json", str(dest)],
                          capture_output=True, text=True, timeout=300, **kw)


def test_json_to_dev_stdout_writes_through_the_pipe(art):
    r = _estimate_json(art, "/dev/stdout")
    assert r.returncode == 0, r.stderr
    assert '"sops"' in r.stdout or '"total"' in r.stdout  # the JSON document came through the pipe
    assert os.path.islink("/dev/stdout")


def test_output_onto_links_and_devices_keeps_them(art, tmp_path, snncc_main):
    """In this process: the writer is the library's (the fifo's reader is another process)."""
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    null_link = tmp_path / "null.md"
    null_link.symlink_to("/dev/null")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert _estimate(art, ["--samples", "2", "--json", link], False, snncc_main)[0] == 0
    assert link.is_symlink() and target.read_text().startswith("{")  # the link's file written, link kept
    code, err = _estimate(art, ["--samples", "2", "--markdown", null_link], False, snncc_main)
    assert code == 0, err
    assert null_link.is_symlink() and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    assert _estimate(art, ["--samples", "2", "--json", fifo], False, snncc_main)[0] == 0
    assert reader.communicate(timeout=60)[0].startswith("{")
    assert fifo.is_fifo()


def test_output_files_honour_the_umask(art, tmp_path, snncc_main):
    """The first mask through the installed command (a started process inherits it), the others in
    this process under its own umask."""
    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        dest = tmp_path / f"m{mask:o}.json"
        if mask == 0o022:
            r = _estimate_json(art, dest, preexec_fn=lambda m=mask: os.umask(m))
            code, err = r.returncode, r.stderr
        else:
            old = os.umask(mask)
            try:
                code, err = _estimate(art, ["--samples", "2", "--json", dest], False, snncc_main)
            finally:
                os.umask(old)
        assert code == 0, err
        assert dest.stat().st_mode & 0o777 == mode


# the full device through the installed command (ENOSPC is also what snncc.console handles), the others
# in this process
@pytest.mark.parametrize("where, what", [("folder", "is a folder, expected a file name"),
                                         ("/proc/snncc.json", "cannot write"),
                                         ("/dev/full", "no space left on the device; nothing was written")])
def test_unwritable_outputs_are_one_line(art, tmp_path, where, what, snncc_main):
    dest = tmp_path if where == "folder" else where
    code, err = _estimate(art, ["--samples", "2", "--json", dest], where == "/dev/full", snncc_main)
    assert code == 2
    assert _one_error_line(err, what)


def test_full_file_system_leaves_nothing_half_written(art, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root (the /dev/full case above covers ENOSPC on a device)")
    try:
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # fill it to the last byte
            while os.write(fd, b"\0" * 512):
                pass
        except OSError:
            pass
        os.close(fd)
        r = _estimate_json(art, mnt / "out.json")
        assert r.returncode == 2
        assert _one_error_line(r.stderr, "no space left on the device; nothing was written")
        assert sorted(os.listdir(mnt)) == ["filler"]  # no partial out.json, no temporary file
    finally:
        subprocess.run(["umount", str(mnt)])


@pytest.mark.parametrize("where, what", [("folder", "is a folder, expected a file name"),
                                         ("/proc/m.nir", "cannot write"),
                                         ("/dev/full", "no space left on the device; nothing was written")])
def test_export_nir_to_unwritable_places_is_one_line(art, tmp_path, where, what, snncc_main):
    dest = tmp_path if where == "folder" else where
    if where == "/dev/full":  # as for estimate above: the full device through the installed command
        r = subprocess.run([EXE, "export-nir", str(art / "art"), str(dest)], capture_output=True, text=True,
                           timeout=300)
        code, err = r.returncode, r.stderr
    else:
        code, _, err = snncc_main("export-nir", art / "art", dest)
    assert code == 2, err
    assert _one_error_line(err, what)
    assert os.path.isdir(tmp_path) and not os.listdir(tmp_path)


# --- numbers and options: validated up front, one line each -----------------------------------------


def _bad_profiles(t):
    import json

    from snncc.profile import PROFILE_DIR

    doc = json.loads((PROFILE_DIR / "45nm.json").read_text())
    doc["figures"]["e_ac"]["value"] = float("inf")
    (t / "inf.json").write_text(json.dumps(doc))  # json writes the bare token Infinity
    (t / "binary.json").write_bytes(bytes(range(256)))
    (t / "profdir").mkdir(exist_ok=True)


@pytest.mark.parametrize("argv, what", [
    (["--seed", str(2 ** 70)], "argument --seed: expected an integer in 0..4294967295"),
    (["--rate", "-5"], "argument --rate: expected a positive finite number, got -5"),
    (["--rate", "nan"], "argument --rate: expected a positive finite number, got nan"),
    (["--rate", "inf"], "argument --rate: expected a positive finite number, got inf"),
    (["--profile", "{t}/inf.json"], "figures.e_ac.value: value must be a finite non-negative number"),
    (["--profile", "{t}/binary.json"], "binary.json: not valid JSON"),
    (["--profile", "{t}/profdir"], "profdir: is a folder, expected a profile JSON file"),
])
def test_estimate_numbers_are_checked_up_front(art, argv, what, snncc_main):
    """--seed (argparse's refusal) through the installed command, the others in this process."""
    _bad_profiles(art)
    code, err = _estimate(art, ["--samples", "2"] + [a.format(t=art) for a in argv], argv[0] == "--seed", snncc_main)
    assert code == 2, err
    assert _one_error_line(err, what), err


@pytest.mark.parametrize("value", ["Infinity", "NaN", "1e400"])
def test_target_option_numbers_are_finite(art, tmp_path, value, snncc_main):
    """In this process: the refusal is the option parser's (the module's fixture compiles installed)."""
    code, _, err = snncc_main("compile", art / "conv.pt2", "--target", "loihi", "--target-option", f"system={value}",
                              "-o", tmp_path / "o")
    assert code == 2, err
    assert _one_error_line(err, "--target-option: option system = ")
    assert "is not a finite number" in err and not (tmp_path / "o").exists()


def test_read_only_install_and_home_compile_the_event_kernels_in_memory(art):
    """numba's cache=True raises 'cannot cache function' when neither the package folder nor HOME can
    be written: the event simulator falls back to in-memory compilation with one warning. The
    package's kernel folder is mounted read-only in a private mount namespace (needs root)."""
    import snncc.sim.events.kernels as kernels

    d = os.path.dirname(kernels.__file__)
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("a private read-only mount needs root (unshare -m)")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["HOME"] = "/proc"  # not writable, even for root
    cmd = (f"mount --bind -o ro {d} {d} && mount -o remount,bind,ro {d} && "
           f"{EXE} simulate {art / 'art'} --schedule event --samples 2")
    r = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "spike counts == reference" in r.stdout
    warn = [ln for ln in r.stderr.splitlines() if "numba cannot write its kernel cache" in ln]
    assert len(warn) == 1 and warn[0].startswith("snncc: warning: "), r.stderr


def test_a_report_set_is_written_under_a_lock_on_its_folder(art, tmp_path):
    """Two `--report` writers of one folder take turns (artifact.write_set): while another holds the
    folder's lock, snncc waits before writing any file of its set, then writes the whole set."""
    import fcntl

    rep = tmp_path / "rep"
    rep.mkdir()
    fd = os.open(rep, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another writer is busy with this folder
    p = subprocess.Popen([EXE, "estimate", str(art / "art"), "--samples", "2", "--report", str(rep)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, waiting = time.time() + 180, False
        while time.time() < deadline and p.poll() is None and not waiting:
            time.sleep(0.2)
            try:
                waiting = "lock" in open(f"/proc/{p.pid}/wchan").read()
            except OSError:
                pass
        assert waiting and p.poll() is None, "snncc did not wait for the folder's lock"
        assert os.listdir(rep) == []  # nothing of its set written while the other writer holds the folder
    finally:
        os.close(fd)  # the other writer is done
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert {"report.md", "report.html"} <= set(os.listdir(rep))
