"""Shared fixtures: a tiny database written once per session by the real writer."""

import pytest

from nanoedx_dataset import generate
from nanoedx_dataset.generation import single

TINY = dict(n=12, size=32, seed=7)


@pytest.fixture(scope="session")
def tiny_db(tmp_path_factory):
    """12 samples at 32^3 (every family once), 16 angles, noise c1000_b100."""
    path = tmp_path_factory.mktemp("db") / "tiny.h5"
    return generate(path, None, progress=False, **TINY)


def fail_at_sample(monkeypatch, index: int, error: BaseException) -> None:
    """Make the generator raise ``error`` when it computes sample ``index`` (in this process)."""
    real = single.make_sample

    def failing(cfg, i):
        if i == index:
            raise error
        return real(cfg, i)

    monkeypatch.setattr(single, "make_sample", failing)


@pytest.fixture
def hide_modules(monkeypatch):
    """``hide(prefix)``: from then on, importing a module whose name starts with ``prefix``
    raises ImportError, as if its extra were not installed."""
    import builtins
    import importlib

    real_import, real_module = builtins.__import__, importlib.import_module

    def hide(prefix: str) -> None:
        def fake_import(name, *args, **kwargs):
            if name.startswith(prefix):
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        def fake_module(name, *args, **kwargs):
            if name.startswith(prefix):
                raise ImportError(name)
            return real_module(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", fake_import)
        monkeypatch.setattr(importlib, "import_module", fake_module)

    return hide
