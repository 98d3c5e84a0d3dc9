"""Shared fixtures: the sample head model (built once per test session), and luigi.cfg
pointing at a subject folder in NeRSemble's layout."""

import json
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest

from flame_tracking.model import FlameModel
from flame_tracking.sample_model import build_sample_model
from tasks.formats.cameras import SERIALS

SEQUENCES = ("EXP-1-head", "EXP-2-eyes")
"""The sequences of the `settings` fixture's subject 043."""


@pytest.fixture(scope="session")
def sample_model() -> FlameModel:
    return build_sample_model()


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[luigi.configuration.LuigiConfigParser]:
    """luigi.cfg pointing at a fresh NeRSemble-layout subject 043 (files only stat-ed)."""
    subject = tmp_path / "data" / "043"
    (subject / "calibration").mkdir(parents=True)
    for name in ("camera_params.json", "color_calibration.json"):
        (subject / "calibration" / name).write_text("{}")
    for sequence in SEQUENCES:
        videos = subject / "sequences" / sequence / "images"
        videos.mkdir(parents=True)
        for serial in SERIALS:
            (videos / f"cam_{serial}.mp4").write_bytes(b"video")
    (tmp_path / "manifest.json").write_text(json.dumps({"subjects": ["043"]}))
    cfg = luigi.configuration.get_config()
    saved = {s: dict(cfg.items(s)) for s in cfg.sections()}
    cfg.set("faceanything", "profile", "nersemble")
    cfg.set("faceanything", "data_root", str(tmp_path / "data"))
    cfg.set("faceanything", "output_root", str(tmp_path / "out"))
    yield cfg
    for section in cfg.sections():
        cfg.remove_section(section)
    for section, items in saved.items():
        cfg.add_section(section)
        for key, value in items.items():
            cfg.set(section, key, value)
