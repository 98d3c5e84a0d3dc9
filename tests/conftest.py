"""Shared fixtures: the sample head model is built once per test session."""

import pytest

from flame_tracking.model import FlameModel
from flame_tracking.sample_model import build_sample_model


@pytest.fixture(scope="session")
def sample_model() -> FlameModel:
    return build_sample_model()
