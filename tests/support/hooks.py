"""Code that a test injects into a process (its own, or a subprocess through a `sitecustomize.py`) without
touching the code under test."""
from __future__ import annotations

# Cuts a process off the network: a connection to anything but this machine fails at once, so a test of "no
# network" answers the same on a machine that has one. A `sitecustomize.py` for subprocesses (see
# offline_hooks), or applied in-process by the `offline` fixture.
OFFLINE_SITECUSTOMIZE = """
import errno, ipaddress, socket
_connect = socket.socket.connect
def _on_this_machine(host):
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"
def _offline_connect(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _on_this_machine(address[0]):
        raise OSError(errno.ENETUNREACH, f"network unreachable (this test runs offline): {address[0]}")
    return _connect(sock, address)
socket.socket.connect = _offline_connect
"""


# The body of a `sitecustomize.py` that runs PATCH (Python code seeing the module as `module`) right after
# MODULE is first imported, in every process that has the file's folder first on PYTHONPATH: how the tests
# inject a fault or observe a step deep inside the real command, without touching the code under test.
AFTER_IMPORT_HOOK = """
import importlib.abc, importlib.util, sys
class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module
        def exec_module(module):
            execute(module)
            exec(PATCH, {"module": module})
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, _AfterImport())
"""


def after_import_hook(module: str, patch: str) -> str:
    return f"MODULE = {module!r}\nPATCH = {patch!r}\n{AFTER_IMPORT_HOOK}"
