"""A release-style pickled checkpoint (weights plus pickled training objects, as the authors'
15 GB file is): refused by default with an error naming the file and the flag, loaded with the
explicit opt-in, and converted once to safetensors that then loads without it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from fa_scene import one_thread  # noqa: F401 (fixture)
from safetensors import safe_open

from faceanything.checkpoint import CheckpointError, main, save_checkpoint
from faceanything.model.network import FaceAnything, FaceAnythingConfig, load_checkpoint
from faceanything.predict.run import main as predict_main

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclasses.dataclass
class RunRecord:
    """A custom class instance of the kind training scripts pickle beside the weights."""

    epoch: int
    note: str


@pytest.fixture(scope="module")
def tiny() -> FaceAnything:
    torch.manual_seed(3)
    return FaceAnything(FaceAnythingConfig(size="tiny")).eval()


@pytest.fixture
def release(tiny: FaceAnything, tmp_path: Path) -> Path:
    """The authors' layout (`model.*` keys) with an optimizer object, argparse arguments and a
    custom record pickled beside it: torch.load(weights_only=True) refuses such a file."""
    optimizer = torch.optim.AdamW(tiny.parameters(), lr=1e-4)
    path = tmp_path / "release.pth"
    torch.save(
        {
            "model": tiny.state_dict(),
            "optimizer": optimizer,
            "args": argparse.Namespace(lr=1e-4, size="tiny"),
            "record": RunRecord(epoch=90, note="stage 2"),
        },
        path,
    )
    return path


def outputs(net: FaceAnything) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    images = torch.rand(1, 2, 3, 56, 42)
    with torch.no_grad():
        return net.eval()(images, cameras=False)


def test_pickled_release_needs_the_explicit_opt_in(release: Path, tiny: FaceAnything):
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(release)
    message = str(caught.value)
    assert str(release) in message and "--trust-checkpoint" in message
    assert "faceanything.checkpoint convert" in message
    trusted = load_checkpoint(release, trust=True)
    assert trusted.load_report.kind == "authors" and trusted.config.size == "tiny"
    a, b = outputs(tiny), outputs(trusted)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_commands_refuse_it_without_the_flag(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    image = tmp_path / "in.png"
    image.write_bytes(b"")  # never read: the checkpoint is refused first
    assert predict_main([str(image), "--checkpoint", str(release), "--out", str(tmp_path)]) == 1
    assert "--trust-checkpoint" in capsys.readouterr().err
    target = tmp_path / "release.safetensors"
    assert main(["convert", str(release), str(target)]) == 1
    assert "--trust-checkpoint" in capsys.readouterr().err and not target.exists()


def test_convert_once_then_load_without_trust(release: Path, tiny: FaceAnything, tmp_path: Path):
    target = tmp_path / "converted" / "release.safetensors"
    assert main(["convert", str(release), str(target), "--trust-checkpoint"]) == 0
    converted = load_checkpoint(target)
    assert converted.load_report.kind == "authors" and converted.load_report.new == ()
    a, b = outputs(tiny), outputs(converted)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with safe_open(str(target), framework="pt") as f:
        assert f.metadata()["source"] == "release.pth"


def test_our_checkpoint_converts_with_its_config(tiny: FaceAnything, tmp_path: Path):
    """Ours loads with weights_only (no flag needed); the safetensors copy keeps its config
    (size, canonical centre) in the metadata, and drops the training state."""
    config = dataclasses.replace(tiny.config, canonical_center=(0.0, 0.01, 0.02))
    net = FaceAnything(config)
    net.load_state_dict(tiny.state_dict())
    source = tmp_path / "last.pt"
    train = {"step": 3, "optimizer": torch.optim.AdamW(net.parameters()).state_dict()}
    save_checkpoint(source, config=dataclasses.asdict(config), state=net.state_dict(), train=train)
    target = tmp_path / "last.safetensors"
    assert main(["convert", str(source), str(target)]) == 0
    back = load_checkpoint(target)
    assert back.load_report.kind == "faceanything" and back.config == config
    with safe_open(str(target), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["canonical_center"] == [0.0, 0.01, 0.02]
    a, b = outputs(net), outputs(back)
    assert all(torch.equal(a[k], b[k]) for k in a)
