"""No silent stand-in head: real data without FLAME stops at InspectSubject, before any
SfM, saying what to set; the embedded sample head is used only when asked for, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.subject import InspectSubject, head_model_files


def test_real_data_without_flame_stops_before_any_work(settings, tmp_path: Path) -> None:
    task = InspectSubject(subject="043")
    with pytest.raises(ValueError, match="flame_model") as err:
        task.run()
    assert "stand_in_head" in str(err.value) and "FLAME_masks.pkl" in str(err.value)
    assert not Path(task.output().path).exists()
    assert not (tmp_path / "out" / "subjects" / "043" / "timesteps").exists()


def test_stand_in_head_is_explicit_and_named(settings, tmp_path: Path) -> None:
    embedding = tmp_path / "embedding.npz"
    embedding.write_bytes(b"npz")
    settings.set("faceanything", "stand_in_head", "true")
    settings.set("faceanything", "flame_landmark_embedding", str(embedding))
    files = head_model_files()
    assert files.model is None and files.embedding == embedding
    assert files.describe() == "embedded sample head model (no FLAME)"


def test_flame_files_are_checked(settings, tmp_path: Path) -> None:
    model, embedding = tmp_path / "flame2023.pkl", tmp_path / "embedding.npz"
    masks = tmp_path / "FLAME_masks.pkl"
    model.write_bytes(b"pkl")
    settings.set("faceanything", "flame_model", str(model))
    with pytest.raises(ValueError, match="flame_landmark_embedding"):
        head_model_files()
    settings.set("faceanything", "flame_landmark_embedding", str(embedding))
    with pytest.raises(ValueError, match="without flame_masks"):
        head_model_files()
    settings.set("faceanything", "flame_masks", str(masks))
    with pytest.raises(FileNotFoundError, match="embedding.npz"):
        head_model_files()
    embedding.write_bytes(b"npz")
    with pytest.raises(FileNotFoundError, match="FLAME_masks.pkl"):
        head_model_files()
    masks.write_bytes(b"pkl")
    files = head_model_files()
    assert files.masks == masks and files.describe() == f"FLAME {model}, masks {masks}"
