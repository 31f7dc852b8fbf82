"""test/integration/conftest.py's fixtures for the suites in other directories (test/scale,
test/proof).

A conftest.py of their own would clash with this directory's under pytest's rootdir-less module
names (see test/tsan/test_tsan.py), so they load this one once, as a plain module under a name of
its own, and re-export the fixtures they use into their test modules' globals."""

import importlib.util
import sys
from pathlib import Path

_NAME = "chanced_shared_integration_conftest"


def integration_conftest():
    """The integration conftest module, loaded once per process."""
    if _NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            _NAME, Path(__file__).resolve().parent / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[_NAME] = module
    return sys.modules[_NAME]


def export_fixtures(namespace, *names):
    """Puts the named fixtures into namespace (a test module's globals()); returns the module."""
    module = integration_conftest()
    for name in names:
        namespace[name] = getattr(module, name)
    return module
