"""A picture of a FLAME-structured head model: neutral, expressions, jaw, eyes, identities.

    .venv/bin/python -m tasks.pictures.head_model docs/sample_head_model.png

Uses the embedded sample head model unless `--flame` names a user's FLAME pkl.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.loading import load_flame
from flame_tracking.model import FlameModel
from flame_tracking.sample_model import EXPRESSION_NAMES, build_sample_model
from tasks.formats.cameras import Camera
from tasks.pictures.render import Scene, rasterize, shade, smooth_normals
from tasks.pictures.stages import save_figure


def _camera(yaw_deg: float, *, size: tuple[int, int] = (300, 380)) -> Camera:
    """A camera 0.75 m from the origin at `yaw_deg` around the y (up) axis, looking at it."""
    yaw = np.radians(yaw_deg)
    center = 0.75 * np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    forward = -center / np.linalg.norm(center)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    world_2_cam = np.eye(4)
    world_2_cam[:3, :3] = rotation
    world_2_cam[:3, 3] = -rotation @ center
    w, h = size
    K = np.array([[1100.0, 0, (w - 1) / 2], [0, 1100.0, (h - 1) / 2], [0, 0, 1]])
    return Camera(serial="preview", K=K, world_2_cam=world_2_cam, width=w, height=h)


def _variants(model: FlameModel) -> list[tuple[str, FlameParams, float]]:
    """(title, parameters, camera yaw in degrees) for each panel."""

    def expr(**weights: float) -> torch.Tensor:
        e = torch.zeros(model.num_expr, dtype=torch.float64)
        for name, w in weights.items():
            e[EXPRESSION_NAMES.index(name)] = w
        return e[None]

    def jaw(angle: float) -> torch.Tensor:
        return torch.tensor([[angle, 0.0, 0.0]], dtype=torch.float64)

    shape = torch.zeros(1, model.num_shape, dtype=torch.float64)
    return [
        ("neutral", FlameParams(), 0.0),
        ("neutral, yaw 40", FlameParams(), 40.0),
        ("jaw 0.15 rad", FlameParams(jaw_pose=jaw(0.15)), 0.0),
        ("jaw 0.3 rad", FlameParams(jaw_pose=jaw(0.3)), 20.0),
        ("smile", FlameParams(expr=expr(smile_left=1.0, smile_right=1.0)), 0.0),
        ("brows up", FlameParams(expr=expr(brow_inner_up_left=1.0, brow_inner_up_right=1.0)), 0.0),
        ("pucker", FlameParams(expr=expr(pucker=1.0)), 30.0),
        ("eyes closed", FlameParams(expr=expr(eye_close_left=1.0, eye_close_right=1.0)), 0.0),
        ("eyes turned", FlameParams(eyes_pose=torch.tensor([[0, 0.4, 0, 0, 0.4, 0.0]])), 0.0),
        ("identity +2", FlameParams(shape=shape + 2.0), 0.0),
        ("identity -2", FlameParams(shape=shape - 2.0), 0.0),
        ("neck turned", FlameParams(neck_pose=torch.tensor([[0.0, 0.5, 0.0]])), 0.0),
    ]


def head_model_picture(*, model: FlameModel, path: Path, columns: int = 6) -> Path:
    """Grey-shaded renders of the model under the `_variants` parameters, in a grid."""
    layer = FlameLayer(model, dtype=torch.float64)
    panels = _variants(model)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 3.0 * rows))
    for ax, (title, params, yaw) in zip(axes.ravel(), panels, strict=False):
        with torch.no_grad():
            vertices = layer(params).vertices[0].numpy()
        camera = _camera(yaw)
        fragments = rasterize(scene=Scene(vertices=vertices, faces=model.f), camera=camera)
        image = shade(
            fragments=fragments,
            texture=np.full((1, 1, 3), 0.8),
            uv=np.zeros((camera.height, camera.width, 2)),
            normals=smooth_normals(fragments=fragments, vertices=vertices),
            camera=camera,
        )
        ax.imshow(np.clip(np.nan_to_num(image, nan=1.0), 0, 1))
        ax.set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--flame", type=Path, default=None, help="a FLAME 2020/2023 pkl")
    args = parser.parse_args(argv)
    model = load_flame(args.flame) if args.flame else build_sample_model()
    print(head_model_picture(model=model, path=args.out))


if __name__ == "__main__":
    main()
