"""Shared fixtures: a tiny database written once per session by the real writer."""

import pytest

from nanoedx_dataset import generate

TINY = dict(n=12, size=32, seed=7)


@pytest.fixture(scope="session")
def tiny_db(tmp_path_factory):
    """12 samples at 32^3 (every family once), 16 angles, noise c1000_b100."""
    path = tmp_path_factory.mktemp("db") / "tiny.h5"
    return generate(path, None, progress=False, **TINY)
