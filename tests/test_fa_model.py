"""The network: outputs, cameras from rays, and the three checkpoint kinds (DA3's, the authors'
layout, ours) with clear errors for files that do not fit."""

from __future__ import annotations

import math
from pathlib import Path

import depth_anything_3
import pytest
import torch
from depth_anything_3.cfg import create_object, load_config
from depth_anything_3.model.dpt import DPT
from fa_scene import one_thread  # noqa: F401 (fixture)
from safetensors.torch import save_model

from faceanything.checkpoint import CheckpointError, save_checkpoint
from faceanything.geometry import cameras_from_rays, ray_targets
from faceanything.model.network import (
    FaceAnything,
    FaceAnythingConfig,
    build_da3,
    load_checkpoint,
    parameter_count,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = FaceAnythingConfig(size="tiny")


@pytest.fixture(scope="module")
def tiny() -> FaceAnything:
    torch.manual_seed(0)
    return FaceAnything(TINY).eval()


def test_forward_shapes_and_cameras(tiny: FaceAnything):
    images = torch.rand(2, 3, 3, 70, 56)
    with torch.no_grad():
        out = tiny(images)
    assert out["depth"].shape == out["depth_conf"].shape == (2, 3, 70, 56)
    assert out["ray"].shape == (2, 3, 40, 32, 6) and out["ray_conf"].shape == (2, 3, 40, 32)
    assert out["canonical"].shape == (2, 3, 70, 56, 3)
    assert out["canonical_conf"].shape == (2, 3, 70, 56)
    assert out["extrinsics"].shape == (2, 3, 4, 4) and out["intrinsics"].shape == (2, 3, 3, 3)
    assert (out["depth"] > 0).all() and (out["depth_conf"] > 1).all()
    assert (out["canonical_conf"] > 1).all()
    with pytest.raises(ValueError, match="multiple of 14"):
        tiny(torch.rand(1, 1, 3, 70, 50))


def test_sequences_are_independent_and_views_interact(tiny: FaceAnything):
    """Batch items do not see each other; views of one item do (DA3's global attention)."""
    images = torch.rand(2, 2, 3, 42, 42)
    with torch.no_grad():
        both = tiny(images, cameras=False)["canonical"]
        alone = tiny(images[:1], cameras=False)["canonical"]
        other_view = images.clone()
        other_view[0, 1] = torch.rand(3, 42, 42)
        changed = tiny(other_view, cameras=False)["canonical"]
    assert torch.allclose(both[:1], alone, atol=1e-5)
    assert not torch.allclose(changed[0, 0], both[0, 0], atol=1e-6)


def test_cameras_from_known_rays():
    """Off-centre principal points and turned cameras come back exactly."""
    gen = torch.Generator().manual_seed(0)
    K = torch.tensor([[60.0, 0, 20.0], [0, 55.0, 40.0], [0, 0, 1]]).repeat(3, 1, 1)
    w2c = torch.eye(4).repeat(3, 1, 1)
    for i in range(3):
        twist = 0.3 * torch.randn(3, 3, generator=gen)
        w2c[i, :3, :3] = torch.linalg.matrix_exp(twist - twist.T)
        w2c[i, :3, 3] = torch.randn(3, generator=gen)
    rays = ray_targets(K, w2c, image=(70, 56), rays=(40, 32))
    extrinsics, intrinsics = cameras_from_rays(rays, torch.ones(3, 40, 32), image=(70, 56))
    assert torch.allclose(intrinsics, K, atol=1e-3)
    assert torch.allclose(extrinsics, w2c, atol=1e-5)


def package_da3(size: str) -> torch.nn.Module:
    """DA3's own network of a size, built by the package alone."""
    root = Path(depth_anything_3.__path__[0]) / "configs"
    return create_object(load_config(str(root / f"da3-{size}.yaml")))


def test_da3_checkpoint_loads_with_only_the_canonical_head_new(tmp_path: Path):
    net = package_da3("small")
    # safetensors' save_model, as the hub mixin uses: tied tensors keep one name
    save_model(net, str(tmp_path / "da3-small.safetensors"))
    loaded = load_checkpoint(tmp_path / "da3-small.safetensors")
    report = loaded.load_report
    assert loaded.config.size == "small" and report.kind == "da3"
    head_keys = {f"model.deformation_head.{k}" for k in loaded.canonical_head.state_dict()}
    assert set(report.new) == head_keys and report.ignored == ()
    ours = loaded.state_dict()
    assert all(torch.equal(ours[f"model.{k}"], v) for k, v in net.state_dict().items())
    assert parameter_count(net) == 34_299_463
    assert parameter_count(loaded) - parameter_count(net) == parameter_count(loaded.canonical_head)
    # the API class's layout (`model.` prefix) in a torch file loads the same way
    torch.save({f"model.{k}": v for k, v in net.state_dict().items()}, tmp_path / "api.pt")
    assert set(load_checkpoint(tmp_path / "api.pt").load_report.new) == head_keys


def authors_layout(size: str) -> dict[str, torch.Tensor]:
    """A state dict as the authors' loader makes it: DA3's API class (`model.` + the network)
    with the canonical head set as `model.deformation_head = DPT(dim, output_dim=4,
    head_name="deformation", use_sky_head=False, activation="linear")`."""
    torch.manual_seed(1)
    net = build_da3(size)
    head = net.head
    net.deformation_head = DPT(
        head.norm.normalized_shape[0],
        output_dim=4,
        head_name="deformation",
        use_sky_head=False,
        activation="linear",
        features=head.scratch.layer1_rn.out_channels,
        out_channels=[p.out_channels for p in head.projects],
    )
    return {f"model.{k}": v for k, v in net.state_dict().items()}


def test_authors_layout_loads_with_nothing_missing(tmp_path: Path):
    state = authors_layout("tiny")
    state["model.gs_head.scratch.output_conv1.weight"] = torch.zeros(1)  # DA3-Giant's 3DGS
    torch.save({"model": state}, tmp_path / "checkpoint.pt")
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")
    report = loaded.load_report
    assert report.kind == "authors" and report.new == ()
    assert report.ignored == ("model.gs_head.scratch.output_conv1.weight",)
    ours = loaded.state_dict()
    assert set(ours) == set(state) - set(report.ignored)
    assert all(torch.equal(ours[k], state[k]) for k in ours)


def test_our_checkpoint_round_trip(tmp_path: Path, tiny: FaceAnything):
    config = FaceAnythingConfig(size="tiny", canonical_center=(0.0, 0.01, 0.02))
    net = FaceAnything(config).eval()
    save_checkpoint(tmp_path / "run.pt", config=vars(config), state=net.state_dict())
    back = load_checkpoint(tmp_path / "run.pt").eval()
    assert back.config == config and back.load_report.kind == "faceanything"
    images = torch.rand(1, 2, 3, 28, 42)
    with torch.no_grad():
        a, b = net(images, cameras=False), back(images, cameras=False)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_files_name_themselves_and_their_keys(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00 not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00 not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")
    state = authors_layout("tiny")
    state.pop("model.deformation_head.scratch.output_conv2.2.bias")
    state["model.head.extra.weight"] = torch.zeros(2)
    torch.save({"model": state}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="odd.pt") as caught:
        load_checkpoint(tmp_path / "odd.pt")
    message = str(caught.value)
    assert "missing 1 keys [model.deformation_head.scratch.output_conv2.2.bias]" in message
    assert "unexpected 1 keys [model.head.extra.weight]" in message
    torch.save({"model": {"model.head.norm.weight": torch.ones(3)}}, tmp_path / "headless.pt")
    with pytest.raises(CheckpointError, match="cls_token"):
        load_checkpoint(tmp_path / "headless.pt")


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = FaceAnything(TINY).train()
    saved = FaceAnything(FaceAnythingConfig(size="tiny", gradient_checkpointing=True)).train()
    saved.load_state_dict(plain.state_dict())
    images = torch.rand(1, 2, 3, 28, 28)
    for net in (plain, saved):
        out = net(images)
        sum(v.mean() for v in out.values()).backward()
    for (name, a), b in zip(plain.named_parameters(), saved.parameters(), strict=True):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    assert math.isfinite(
        sum(p.grad.abs().sum().item() for p in saved.parameters() if p.grad is not None)
    )


def test_giant_canonical_head_is_the_authors(monkeypatch: pytest.MonkeyPatch):
    """At DA3-Giant the canonical head is exactly the authors' `DPT(3072, output_dim=4,
    head_name="deformation", use_sky_head=False, activation="linear")` with DPT's defaults
    (built with parameters on the meta device: shapes only, no memory)."""
    register = torch.nn.Module.register_parameter

    def on_meta(self, name, param):
        if param is not None:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    monkeypatch.setattr(torch.nn.Module, "register_parameter", on_meta)
    giant = FaceAnything(FaceAnythingConfig(size="giant"))
    theirs = DPT(
        3072, output_dim=4, head_name="deformation", use_sky_head=False, activation="linear"
    )
    ours = {k: v.shape for k, v in giant.canonical_head.state_dict().items()}
    assert ours == {k: v.shape for k, v in theirs.state_dict().items()}
    assert parameter_count(giant.canonical_head) == 35_534_116
