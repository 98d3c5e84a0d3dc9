"""The Face Anything network: Depth Anything 3 plus a canonical DPT head (paper 3.1, eq. 1).

`FaceAnything.model` is DA3's own `DepthAnything3Net` built from the package's yaml config of
the chosen size (backbone, DualDPT depth + ray head, camera encoder/decoder); the canonical head
is a `DPT` attached as `model.deformation_head`, reading the same backbone features as the depth
head, with 3 linear canonical channels and 1 confidence channel (1 + exp). These names are the
ones the authors' released inference code uses, so state dicts share one layout:

    model.backbone.pretrained.*   DINOv2 backbone (DA3)
    model.head.*                  DualDPT: depth + confidence, ray map + confidence (DA3)
    model.cam_enc.*, model.cam_dec.*   DA3's camera encoder/decoder (unused by our forward)
    model.deformation_head.*      canonical head (Face Anything)

Loading lives in `faceanything.checkpoint`; `load_checkpoint` is re-exported here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

import depth_anything_3
import torch
from depth_anything_3.cfg import create_object, load_config
from depth_anything_3.model.da3 import DepthAnything3Net
from depth_anything_3.model.dinov2.vision_transformer import DinoVisionTransformer
from depth_anything_3.model.dpt import DPT
from depth_anything_3.utils import logger as da3_logger
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from faceanything.checkpoint import (
    CheckpointError,
    LoadReport,
    infer_size,
    match_keys,
    read_checkpoint,
)
from faceanything.geometry import PATCH, cameras_from_rays

if "DA3_LOG_LEVEL" not in os.environ:  # DA3 prints an INFO line per forward otherwise
    da3_logger.logger.level = da3_logger.LOG_LEVELS["WARN"]

Size = Literal["small", "base", "large", "giant", "tiny"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CANONICAL_HEAD = "deformation_head"
"""Attribute of `DepthAnything3Net` holding the canonical head (the authors' name)."""
EMBED_DIMS = {"tiny": 64, "small": 384, "base": 768, "large": 1024, "giant": 1536}
"""Backbone width of each size; a state dict's size is read from it."""
_TINY = {"depth": 4, "heads": 4, "features": 32, "out_channels": [16, 32, 64, 64]}
"""The CPU-test size: DA3-Small's classes, 4 blocks of width 64 (alternating attention from
block 2), a 32-feature DualDPT; 1.3 M parameters with the canonical head."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaceAnythingConfig:
    """What builds a Face Anything network; stored in our checkpoints."""

    size: Size = "small"
    """DA3 size (yaml config `da3-{size}`); "tiny": a narrow CPU-test build of the same classes."""
    canonical_center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """FLAME point (m) that is the canonical origin: predictions are FLAME coordinates minus this.
    FLAME's own origin lies inside the head at the face's centre (paper B.1), hence zero."""
    gradient_checkpointing: bool = False
    """Recompute each backbone block in the backward pass (memory for time)."""
    ref_view_strategy: Literal["first", "middle", "saddle_balanced", "saddle_sim_range"] = "first"
    """DA3's reference-view choice for 3+ views; "first" matches our targets (first view's
    frame)."""
    head_chunk: int = 8
    """Images per chunk in the dense heads (memory)."""


def da3_config(size: Size) -> DictConfig:
    """The package's yaml config of a size (tiny: DA3-Small's, narrowed), without the 3DGS head."""
    root = Path(depth_anything_3.__path__[0]) / "configs"
    config = load_config(str(root / f"da3-{'small' if size == 'tiny' else size}.yaml"))
    for key in ("gs_head", "gs_adapter"):
        config.pop(key, None)
    if size == "tiny":
        width = EMBED_DIMS["tiny"]
        config.net.out_layers = list(range(_TINY["depth"]))
        for key in ("alt_start", "qknorm_start", "rope_start"):
            config.net[key] = 2
        config.head.dim_in = 2 * width
        config.head.features = _TINY["features"]
        config.head.out_channels = _TINY["out_channels"]
        config.cam_enc.dim_out = width
        config.cam_enc.num_heads = _TINY["heads"]
        config.cam_dec.dim_in = 2 * width
    for part in (config, config.net, config.head, config.cam_enc, config.cam_dec):
        if not str(part.__object__.path).startswith("depth_anything_3.model."):
            raise ValueError(f"unexpected class {part.__object__.path} in DA3's {size} config")
    return config


def build_da3(size: Size) -> DepthAnything3Net:
    """DA3's network of a size, with the canonical head attached as `deformation_head`."""
    config = da3_config(size)
    net = create_object(config)
    if size == "tiny":
        old = net.backbone.pretrained
        net.backbone.pretrained = DinoVisionTransformer(
            img_size=518,
            patch_size=PATCH,
            embed_dim=EMBED_DIMS["tiny"],
            depth=_TINY["depth"],
            num_heads=_TINY["heads"],
            mlp_ratio=4,
            alt_start=old.alt_start,
            qknorm_start=old.qknorm_start,
            rope_start=old.rope_start,
            cat_token=old.cat_token,
        )
    head = DPT(
        int(config.head.dim_in),
        output_dim=4,
        head_name="deformation",
        use_sky_head=False,
        activation="linear",
        features=int(config.head.features),
        out_channels=list(config.head.out_channels),
    )
    setattr(net, CANONICAL_HEAD, head)
    return net


def _checkpointed(process):
    """Wrap a backbone's `process_attention` so each block is recomputed in backward."""

    def run(x, block, attn_type="global", pos=None, attn_mask=None):
        if not (torch.is_grad_enabled() and any(p.requires_grad for p in block.parameters())):
            return process(x, block, attn_type, pos, attn_mask)
        return checkpoint(process, x, block, attn_type, pos, attn_mask, use_reentrant=False)

    return run


class FaceAnything(nn.Module):
    """Depth, ray map and canonical map of one or more images, in one forward (eq. 1).

    Geometry is in DA3's normalised frame: the first view's camera, scale such that the
    mean distance of scene points is about 1 (`faceanything.data` makes targets the same way).
    """

    def __init__(self, config: FaceAnythingConfig | None = None) -> None:
        super().__init__()
        self.config = config or FaceAnythingConfig()
        self.model = build_da3(self.config.size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)
        self.load_report = None
        """What the last checkpoint load found (`faceanything.checkpoint.LoadReport`)."""
        if self.config.gradient_checkpointing:
            vit = self.model.backbone.pretrained
            vit.process_attention = _checkpointed(vit.process_attention)

    @property
    def canonical_head(self) -> DPT:
        return getattr(self.model, CANONICAL_HEAD)

    def forward(self, images: Tensor, *, cameras: bool | None = None) -> dict[str, Tensor]:
        """Predictions for images [B, S, 3, H, W] in [0, 1] (H, W multiples of 14).

        Returns depth, depth_conf [B, S, H, W]; ray [B, S, h, w, 6] (world direction
        R K^-1 (u, v, 1) then camera centre, h = 8 H / 14) with ray_conf [B, S, h, w];
        canonical [B, S, H, W, 3] (FLAME metres minus `canonical_center`) with canonical_conf.
        With `cameras` (default: in eval mode) also extrinsics [B, S, 4, 4] (world_2_cam,
        OpenCV, first view's frame) and intrinsics [B, S, 3, 3] (pixels of the input) fitted
        to the rays (`geometry.cameras_from_rays`).
        """
        B, S, _, H, W = images.shape
        if H % PATCH or W % PATCH:
            raise ValueError(f"image size {W}x{H} is not a multiple of {PATCH}")
        x = (images - self.mean) / self.std
        feats, _ = self.model.backbone(
            x,
            cam_token=None,
            export_feat_layers=[],
            ref_view_strategy=self.config.ref_view_strategy,
        )
        with torch.autocast(device_type=x.device.type, enabled=False):
            feats = [(f.float(), token.float()) for f, token in feats]
            dense = self.model.head(
                feats, H, W, patch_start_idx=0, chunk_size=self.config.head_chunk
            )
            # DPT chunks along S only: flatten B into S so every image is covered.
            flat = [(f.reshape(1, B * S, *f.shape[2:]), token) for f, token in feats]
            canon = self.canonical_head(
                flat, H, W, patch_start_idx=0, chunk_size=self.config.head_chunk
            )
        out = {
            "depth": dense["depth"],
            "depth_conf": dense["depth_conf"],
            "ray": dense["ray"],
            "ray_conf": dense["ray_conf"],
            "canonical": canon["deformation"].reshape(B, S, H, W, 3),
            "canonical_conf": canon["deformation_conf"].reshape(B, S, H, W),
        }
        if cameras if cameras is not None else not self.training:
            with torch.no_grad():
                extrinsics, intrinsics = cameras_from_rays(
                    out["ray"], out["ray_conf"], image=(H, W)
                )
            out.update(extrinsics=extrinsics, intrinsics=intrinsics)
        return out


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_checkpoint(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    size: Size | None = None,
    trust: bool = False,
) -> FaceAnything:
    """A network with a checkpoint's weights: ours (its stored config), the authors' release, or
    a DA3 file (canonical head new, see `.load_report`); `size` overrides the size read from the
    backbone's width; `trust`: the file may run pickled code (`read_checkpoint`).
    CheckpointError names the file and any missing/unexpected keys."""
    path = Path(path)
    loaded = read_checkpoint(path, trust=trust)
    if loaded.config is not None:
        fields = {f.name for f in dataclasses.fields(FaceAnythingConfig)}
        unknown = sorted(set(loaded.config) - fields)
        if unknown:
            raise CheckpointError(f"{path}: unknown config fields {unknown}")
        stored = dict(loaded.config)
        if "canonical_center" in stored:
            stored["canonical_center"] = tuple(stored["canonical_center"])
        config = FaceAnythingConfig(**stored)
    else:
        config = FaceAnythingConfig(size=size or infer_size(loaded.state, EMBED_DIMS, path))
    net = FaceAnything(config)
    load_weights(net, path, loaded=loaded)
    return net.to(device)


def load_weights(
    net: FaceAnything, path: str | os.PathLike, *, loaded=None, trust: bool = False
) -> LoadReport:
    """Load a checkpoint file's weights into an existing network (sizes must agree)."""
    path = Path(path)
    loaded = loaded or read_checkpoint(path, trust=trust)
    new = match_keys(path=path, loaded=loaded, expected=net.state_dict())
    net.load_state_dict(loaded.state, strict=False)
    net.load_report = LoadReport(path=path, kind=loaded.kind, new=new, ignored=loaded.ignored)
    return net.load_report
