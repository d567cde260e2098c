"""The environment the README's set-up builds: SynSense's `samna` is not installed (the
PyPI package is a placeholder that pip-installs code from a third-party index when imported), while
sinabs and the pinned NIR packages it really needs are; the real-samna code path of the Speck
backend stays behind its import check."""

import importlib.util
from importlib.metadata import version


def test_samna_placeholder_is_not_installed():
    assert importlib.util.find_spec("samna") is None


def test_sinabs_and_its_real_dependencies_are_pinned_versions():
    import sinabs  # noqa: F401  (imports without samna)

    assert version("sinabs") == "3.1.3"
    assert version("nir") == "1.0.4" and version("nirtorch") == "2.0.2"


def test_speck_backend_guards_the_real_samna_path():
    from snncc_speck.config import samna_available

    assert samna_available() is False


def test_peer_libraries_of_the_interop_tests_are_the_pinned_versions():
    """scripts/setup.sh installs them (--no-deps): tests/test_peer_models.py, tests/test_nir_peers.py
    and the netx reader test in backends/lava/tests/test_netx.py use their real code."""
    assert version("spikingjelly") == "2.0.0" and version("loguru") == "0.7.3"
    assert version("norse") == "1.1.0" and version("snntorch") == "1.0.0"
    assert version("lava-dl") == "0.6.0"
