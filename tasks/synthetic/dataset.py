"""A synthetic face set written straight into the shard format: many identities, exact truth.

Each identity becomes one shard (`tasks.formats.shards`): one sequence of `timesteps` frames
seen by `views` cameras of the 16-camera rig, with the renderer's exact depth, canonical map
(the template point of each pixel's surface point; on the hair, the sample's deformation
transfer of `tasks.sample.hair`), world normals and mask (1 wherever canonical is known: head,
neck and hair), plus `face` (the model's face region) and `hair` channels. Nothing is
reconstructed, so a shard costs seconds instead of a pipeline run.

The dataset folder holds the shards, `manifest.json` (the shard format's), `identities.parquet`
(what each identity drew: skin tone and Fitzpatrick type, hair colour and style, eye colour,
held out or not) and `synthetic.json` (the settings, and which identities are for training and
which are held out). Training identities are `syn00000`, `syn00001`, ...; held-out identities
are the first `held_out` names of the split manifest (`manifests/synthetic_split.json`), drawn
from their own seeds, so no training identity is ever one of them. Every identity draws from
streams keyed by (seed, name): the same seed writes the same bytes, in any order or process.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from tasks.formats.atomic import atomic_file, write_json
from tasks.formats.exr import write_exr
from tasks.formats.shards import (
    FLAME_COLUMNS,
    ShardInfo,
    ShardSample,
    shard_info,
    write_manifest,
    write_shard,
)
from tasks.pictures.render import rasterize
from tasks.progress import Progress, silent
from tasks.sample.scene import ground_truth_maps, record, stream
from tasks.synthetic.identity import (
    Identity,
    bake_identity_texture,
    draw_identity,
    head_model,
    identity_hair,
)
from tasks.synthetic.views import (
    draw_background,
    draw_cameras,
    draw_lighting,
    draw_motion,
    posed_frames,
    render_linear,
    white_balance,
)

SPLIT_MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "synthetic_split.json"
"""The checked-in split: which identity names are held out."""
SEQUENCE = "SYN-1"
"""The one sequence name of every synthetic identity."""
SETTINGS_FILE = "synthetic.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """What synthetic set to write; every field but the counts changes every identity."""

    identities: int = 8
    """Training identities (syn00000, syn00001, ...)."""
    held_out: int | None = None
    """Held-out identities, the first names of the split manifest; None: one per 8 training
    identities, at least one."""
    seed: int = 0
    """Seed of everything drawn."""
    width: int = 176
    """Image width in pixels."""
    height: int = 256
    """Image height in pixels (portrait like NeRSemble's 2200 x 3208 by default)."""
    views: int = 16
    """Cameras of the 16-camera rig per identity (the frontal one always)."""
    timesteps: int = 4
    """Frames of each identity's sequence (head turns and expressions)."""
    texture_size: int = 512
    """Albedo texture texels per side."""
    noise: tuple[float, float] = (0.5 / 255, 3.0 / 255)
    """Range of the sensor noise sigma (sRGB, [0, 1] units), drawn per identity."""

    def __post_init__(self) -> None:
        if self.identities < 0 or (self.held_out is not None and self.held_out < 0):
            raise ValueError("identity counts must not be negative")
        if not 1 <= self.views <= 16:
            raise ValueError(f"views must be 1 to 16, got {self.views}")
        if self.timesteps < 1 or min(self.width, self.height) < 16:
            raise ValueError("need at least one timestep and images of 16 px or more")

    @property
    def held_out_count(self) -> int:
        """`held_out`, or its default for `identities`."""
        return self.held_out if self.held_out is not None else max(1, -(-self.identities // 8))

    def settings(self) -> dict[str, object]:
        """The fields that every identity's pixels depend on (all but the counts)."""
        return {
            k: v for k, v in dataclasses.asdict(self).items() if k not in ("identities", "held_out")
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticResult:
    """What a call wrote."""

    path: Path
    """The dataset folder (shards, manifest.json, identities.parquet, synthetic.json)."""
    train: tuple[str, ...]
    """Training identity names."""
    held_out: tuple[str, ...]
    """Held-out identity names."""
    written: int
    """Shards this call rendered (the others were already there)."""
    images: int
    """Images this call rendered."""
    seconds: float
    """Wall time of the call."""


def held_out_names(split: str | os.PathLike = SPLIT_MANIFEST) -> list[str]:
    """The held-out identity names of a split manifest (its `test_subjects`)."""
    return [str(s) for s in json.loads(Path(split).read_text())["test_subjects"]]


def identity_names(config: SyntheticConfig, split: str | os.PathLike = SPLIT_MANIFEST) -> dict:
    """{name: held out?} of the identities `config` asks for, training ones first."""
    listed = held_out_names(split)
    if config.held_out_count > len(listed):
        raise ValueError(f"{split} names {len(listed)} held-out identities, not enough")
    train = {f"syn{i:05d}": False for i in range(config.identities)}
    clash = set(train) & set(listed)
    if clash:
        raise ValueError(f"{split} holds out training names {sorted(clash)[:5]}")
    return train | {name: True for name in listed[: config.held_out_count]}


def render_identity(
    *, config: SyntheticConfig, identity: Identity, staging: Path
) -> list[ShardSample]:
    """Render every view of every timestep of one identity into `staging` (PNG + EXR)."""
    model = head_model()
    style, hair = identity_hair(model=model, identity=identity)
    texture = bake_identity_texture(identity=identity, style=style, size=config.texture_size)
    params = draw_motion(model=model, identity=identity, timesteps=config.timesteps)
    frames = posed_frames(model=model, params=params, hair=hair)
    cameras = draw_cameras(
        model=model, identity=identity, views=config.views, width=config.width, height=config.height
    )
    lighting, cast = draw_lighting(identity), white_balance(identity)
    rng = stream(identity.seed, "synthetic", identity.name, "backdrop")
    backgrounds = {s: draw_background(rng=rng, camera=c) for s, c in cameras.items()}
    sigma = rng.uniform(*config.noise)
    in_face = np.zeros(model.num_vertices, dtype=bool)
    in_face[model.face_vertex_ids] = True
    face_triangles = in_face[model.f].all(axis=1)
    samples = []
    for t, frame in enumerate(frames):
        for serial, camera in cameras.items():
            fragments = rasterize(scene=frame.scene, camera=camera)
            mask = fragments.mask
            truth = ground_truth_maps(
                frame=frame,
                model=model,
                camera=camera,
                face_triangles=face_triangles,
                fragments=fragments,
            )
            rgb = render_linear(
                fragments=fragments,
                normals=truth["normal"],
                frame=frame,
                model=model,
                texture=texture,
                camera=camera,
                lighting=lighting,
                specular=identity.specular,
            )
            noise = stream(identity.seed, "synthetic", identity.name, "noise", t, serial)
            image = record(
                np.where(mask[..., None], rgb, backgrounds[serial]),
                cast=cast,
                noise_sigma=sigma,
                rng=noise,
            )
            stem = staging / f"{t:05d}_{serial}"
            _write_png(stem.with_suffix(".png"), image)
            write_exr(stem.with_suffix(".exr"), shard_maps(truth))
            samples.append(
                ShardSample(
                    subject=identity.name,
                    sequence=SEQUENCE,
                    frame=t,
                    camera=camera,
                    flame={n: params[n][t] for n in FLAME_COLUMNS},
                    quality={"valid_fraction": float(mask.mean()), "surface_distance_m": 0.0},
                    image=stem.with_suffix(".png"),
                    maps=stem.with_suffix(".exr"),
                )
            )
    return samples


def shard_maps(truth: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A view's shard channels from its truth (`tasks.sample.scene.ground_truth_maps`):
    depth, canonical, normal, mask (1 wherever the surface, hence canonical, is seen), and
    the truth's face region as `face` and hair shell as `hair`, all float32."""
    seen = np.isfinite(truth["depth"])
    return {
        "depth": truth["depth"].astype(np.float32),
        "canonical": truth["canonical"].astype(np.float32),
        "normal": truth["normal"].astype(np.float32),
        "mask": seen.astype(np.float32),
        "face": truth["mask"].astype(np.float32),
        "hair": truth["hair"].astype(np.float32),
    }


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def write_identity(*, config: SyntheticConfig, identity: Identity, out: Path) -> ShardInfo:
    """Render one identity and write its shard `{out}/{name}` (atomically, validated)."""
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{identity.name}.staging") as staging:
        samples = render_identity(config=config, identity=identity, staging=Path(staging))
        return write_shard(samples=samples, path=out / identity.name, overwrite=True)


def _identity_row(identity: Identity) -> dict[str, object]:
    row = dataclasses.asdict(identity)
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in row.items()}


def _check_settings(out: Path, config: SyntheticConfig, overwrite: bool) -> None:
    """Refuse to mix identities of other settings into `out` (unless `overwrite`: start over)."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        return
    if json.loads(path.read_text()).get("settings") == json.loads(json.dumps(config.settings())):
        return
    if not overwrite:
        raise ValueError(f"{out} holds a synthetic set of other settings (see {path})")
    for child in out.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def generate_synthetic(
    *,
    config: SyntheticConfig,
    out: str | os.PathLike,
    split: str | os.PathLike = SPLIT_MANIFEST,
    workers: int = 1,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> SyntheticResult:
    """Write the synthetic set into `out`; shards already there (same settings) are kept, so
    a killed run resumes and a larger `identities` adds shards."""
    start = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config, overwrite)
    model = head_model()
    names = identity_names(config, split)
    identities = [
        draw_identity(name=n, seed=config.seed, held_out=h, num_shape=model.num_shape)
        for n, h in names.items()
    ]
    todo = [i for i in identities if not (out / i.name).is_dir()]
    report = progress or silent
    report(0.0, f"{len(todo)} of {len(identities)} identities to render")
    for done, info in enumerate(_write_all(config, todo, out, workers), start=1):
        report(done / len(todo), f"{info.path.name}: {info.samples} images")
    shards = [shard_info(out / i.name) for i in identities]
    write_manifest(root=out, shards=shards)
    with atomic_file(out / "identities.parquet") as tmp:
        rows = [_identity_row(i) for i in identities]
        pd.DataFrame(rows).to_parquet(tmp, compression="zstd", index=False)
    train = tuple(i.name for i in identities if not i.held_out)
    held = tuple(i.name for i in identities if i.held_out)
    write_json(
        out / SETTINGS_FILE,
        {"settings": config.settings(), "train": list(train), "held_out": list(held)},
    )
    return SyntheticResult(
        path=out,
        train=train,
        held_out=held,
        written=len(todo),
        images=len(todo) * config.views * config.timesteps,
        seconds=time.monotonic() - start,
    )


def _write_all(
    config: SyntheticConfig, todo: list[Identity], out: Path, workers: int
) -> Iterator[ShardInfo]:
    """Write each identity's shard, in this process or in `workers` processes (each identity
    draws from its own streams, so the bytes do not depend on which)."""
    if workers <= 1:
        for identity in todo:
            yield write_identity(config=config, identity=identity, out=out)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_single_thread
    ) as pool:
        futures = [pool.submit(write_identity, config=config, identity=i, out=out) for i in todo]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
