"""Time FLAME tracking of one subject with 50 timesteps on the sample, and print its accuracy.

    python benchmarks/bench_tracking.py [--frames 3] [--timesteps 50] [--root DIR]

The sample world renders `--frames` frames of each of its two sequences (16 views at the
working resolution, stand-in fused clouds from the truth depth, see
`tasks.sample.tracking_inputs`); MediaPipe runs on them; the observations are repeated (with
new frame numbers) up to `--timesteps` and tracked jointly. Prints the time of each part and
the face-region vertex error against the truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.observations import SubjectObservations
from flame_tracking.settings import TrackerConfig
from flame_tracking.tracker import neutral_vertices, posed_vertices, track
from tasks.sample.tracking_inputs import CloudConfig, write_sample_inputs
from tasks.sample.world import SampleSubjectConfig, SampleWorld, build_world
from tasks.tracking import TrackingConfig, gather_observations


def repeat(observations: SubjectObservations, count: int) -> SubjectObservations:
    """`count` timesteps cycling through `observations`, frame numbers made distinct."""
    base = observations.timesteps
    steps = tuple(
        dataclasses.replace(
            base[i % len(base)], frame=base[i % len(base)].frame + 1000 * (i // len(base))
        )
        for i in range(count)
    )
    return SubjectObservations(subject=observations.subject, timesteps=steps)


def face_errors(world: SampleWorld, vertices: np.ndarray, keys: tuple[str, ...]) -> list[float]:
    """Mean face-region vertex distance (mm) of each tracked mesh to its truth."""
    layer = FlameLayer(world.model, torch.float64)
    face = world.model.face_vertex_ids
    errors = []
    for key, mesh in zip(keys, vertices, strict=True):
        sequence, frame = key.rsplit("/", 1)
        t = int(frame) % 1000
        params = {n: torch.tensor(v[t])[None] for n, v in world.params[sequence].items()}
        with torch.no_grad():
            truth = layer(FlameParams(**params)).vertices[0].numpy()
        errors.append(float(np.linalg.norm(mesh[face] - truth[face], axis=1).mean() * 1000))
    return errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=3, help="frames per sequence rendered")
    parser.add_argument("--timesteps", type=int, default=50, help="timesteps tracked jointly")
    parser.add_argument("--root", type=Path, default=None, help="work folder (default: temp)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch)
        start = time.monotonic()
        config = SampleSubjectConfig(subject="900", frames_per_sequence=args.frames)
        world = build_world(config=config, root=root)
        inputs = write_sample_inputs(world, root / "frames", config=CloudConfig())
        made = time.monotonic()
        observed = gather_observations(subject="900", timesteps=inputs, config=TrackingConfig())
        gathered = time.monotonic()
    observations = repeat(observed, args.timesteps)
    result = track(model=world.model, observations=observations, config=TrackerConfig())
    tracked = time.monotonic()
    keys = tuple(result.params)
    errors = face_errors(world, posed_vertices(world.model, result, keys), keys)
    truth_shape = world.params[config.sequences[0]]["shape"][0]
    truth = neutral_vertices(world.model, shape=truth_shape, static_offset=None)
    ours = neutral_vertices(world.model, shape=result.shape, static_offset=result.static_offset)
    face = world.model.face_vertex_ids
    print(f"sample inputs ({len(inputs)} timesteps x 16 views): {made - start:.1f} s")
    print(f"MediaPipe + fused clouds: {(gathered - made) / len(inputs):.2f} s per timestep")
    print(f"tracking {args.timesteps} timesteps jointly: {tracked - gathered:.1f} s")
    for name, steps, seconds, energy in result.stage_log:
        print(f"  stage {name:10s} {steps:4d} steps {seconds:6.1f} s  energy {energy:.3f}")
    print(
        f"kept {len(keys)} of {len(result.reports)}; face-region vertex error (mm): "
        f"median {np.median(errors):.3f}, max {max(errors):.3f}"
    )
    print(
        f"neutral face distance to the truth: tracked "
        f"{np.linalg.norm(ours[face] - truth[face], axis=1).mean() * 1000:.3f} mm, template "
        f"{np.linalg.norm(world.model.v_template[face] - truth[face], axis=1).mean() * 1000:.3f} mm"
    )
    print(f"torch threads while tracking: {TrackerConfig().threads}")


if __name__ == "__main__":
    main()
