"""FLAME's linear blend skinning in PyTorch, batched over timesteps and differentiable.

Order of operations follows FLAME (Li et al. 2017): static offsets and blend shapes on the
template, joints regressed from the shaped mesh, pose correctives from (R - I) of the
non-root joints, then the kinematic chain global -> neck -> {jaw, eyes} skins the mesh and
the translation is added last. Rotations are axis-angle 3-vectors (radians).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from flame_tracking.model import NUM_JOINTS, FlameModel


@dataclasses.dataclass(kw_only=True)
class FlameParams:
    """FLAME parameters for B timesteps; any field left None counts as zeros."""

    shape: torch.Tensor | None = None
    """(B, S) or (S,) identity coefficients (a shared shape may be given once, unbatched)."""
    expr: torch.Tensor | None = None
    """(B, E) expression coefficients."""
    rotation: torch.Tensor | None = None
    """(B, 3) global rotation about the root joint."""
    translation: torch.Tensor | None = None
    """(B, 3) world translation in metres, added after skinning."""
    neck_pose: torch.Tensor | None = None
    """(B, 3) neck joint rotation."""
    jaw_pose: torch.Tensor | None = None
    """(B, 3) jaw joint rotation."""
    eyes_pose: torch.Tensor | None = None
    """(B, 6) left then right eye rotation."""
    static_offset: torch.Tensor | None = None
    """(B, V, 3) or (V, 3) per-vertex offsets added to the template."""


@dataclasses.dataclass(kw_only=True)
class FlameOutput:
    vertices: torch.Tensor
    """(B, V, 3) posed vertices in metres."""
    joints: torch.Tensor
    """(B, 5, 3) posed joint locations."""


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle to (..., 3, 3) rotation (Rodrigues), smooth at zero."""
    theta2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    theta = torch.sqrt(theta2 + 1e-16)
    small = theta2 < 1e-8
    # sin(t)/t and (1-cos t)/t^2 with Taylor series near zero for finite gradients.
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-16))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(skew)
    return eye + a * skew + b * (skew @ skew)


class FlameLayer(nn.Module):
    """FLAME forward pass; the model's arrays are buffers in the chosen dtype."""

    def __init__(self, model: FlameModel, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.num_shape = model.num_shape
        self.num_expr = model.num_expr

        def buf(name: str, a: np.ndarray, dt: torch.dtype = dtype) -> None:
            self.register_buffer(name, torch.tensor(np.asarray(a), dtype=dt))

        buf("v_template", model.v_template)
        buf("faces", model.f, torch.int64)
        buf("shapedirs", np.concatenate([model.shapedirs, model.exprdirs], axis=2))
        buf("posedirs", model.posedirs)
        buf("J_regressor", model.J_regressor)
        buf("lbs_weights", model.weights)
        self.parents = [int(p) for p in model.parents]

    def _batch(self, params: FlameParams) -> int:
        """Batch size B; `shape` (S,) and `static_offset` (V, 3) may be shared, unbatched."""
        unbatched_dims = {"shape": 1, "static_offset": 2}
        sizes = {
            v.shape[0]
            for k, v in vars(params).items()
            if v is not None and v.dim() > unbatched_dims.get(k, 0)
        }
        if len(sizes) > 1:
            raise ValueError(f"FLAME parameters disagree on the batch size: {sorted(sizes)}")
        return sizes.pop() if sizes else 1

    def forward(self, params: FlameParams) -> FlameOutput:
        b = self._batch(params)
        dt, dev = self.v_template.dtype, self.v_template.device

        def get(x: torch.Tensor | None, n: int) -> torch.Tensor:
            if x is None:
                return torch.zeros(b, n, dtype=dt, device=dev)
            x = x.to(dt)
            return x.expand(b, n) if x.dim() == 1 else x

        betas = torch.cat([get(params.shape, self.num_shape), get(params.expr, self.num_expr)], 1)
        template = self.v_template.expand(b, -1, -1)
        if params.static_offset is not None:
            template = template + params.static_offset.to(dt)
        v_shaped = template + torch.einsum("bk,vck->bvc", betas, self.shapedirs)
        joints = torch.einsum("jv,bvc->bjc", self.J_regressor, v_shaped)

        pose = torch.cat(
            [
                get(params.rotation, 3),
                get(params.neck_pose, 3),
                get(params.jaw_pose, 3),
                get(params.eyes_pose, 6),
            ],
            1,
        ).reshape(b, NUM_JOINTS, 3)
        rot = axis_angle_to_matrix(pose)  # (B, 5, 3, 3)
        eye = torch.eye(3, dtype=dt, device=dev)
        pose_feature = (rot[:, 1:] - eye).reshape(b, -1)  # (B, 36)
        v_posed = v_shaped + torch.einsum("bp,vcp->bvc", pose_feature, self.posedirs)

        world, posed_joints = self._chain(rot, joints)
        # Skinning transforms map rest positions: T = G * [I, -J_rest].
        rest = world[..., :3, :3] @ joints[..., None]
        skin = world.clone()
        skin[..., :3, 3] = world[..., :3, 3] - rest[..., 0]
        t = torch.einsum("vj,bjrc->bvrc", self.lbs_weights, skin)  # (B, V, 4, 4)
        verts = (t[..., :3, :3] @ v_posed[..., None])[..., 0] + t[..., :3, 3]
        trans = get(params.translation, 3)[:, None]
        return FlameOutput(vertices=verts + trans, joints=posed_joints + trans)

    def _chain(self, rot: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World transforms (B, 5, 4, 4) of the joints and their posed locations (B, 5, 3)."""
        b = rot.shape[0]
        local = torch.zeros(b, NUM_JOINTS, 4, 4, dtype=rot.dtype, device=rot.device)
        local[..., :3, :3] = rot
        local[..., 3, 3] = 1
        rel = joints.clone()
        rel[:, 1:] = joints[:, 1:] - joints[:, self.parents[1:]]
        local[..., :3, 3] = rel
        world = [local[:, 0]]
        for j in range(1, NUM_JOINTS):
            world.append(world[self.parents[j]] @ local[:, j])
        world_t = torch.stack(world, 1)
        return world_t, world_t[..., :3, 3]
