"""Timing of the ray-casting renderer and of the Face Landmarker at NeRSemble's working sizes.

Run: python -m benchmarks.bench_render
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np
import skimage.data
import skimage.transform
import trimesh

from tasks.face_landmarker import FaceLandmarkerConfig, FaceLandmarkerRunner
from tasks.formats.cameras import Camera
from tasks.pictures.render import Scene, interpolate, rasterize, shade, smooth_normals

SIZES = ((550, 802), (275, 401))
"""(width, height): NeRSemble at 4x and 8x downsampling."""
REPEATS = 5


def best_seconds(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Fastest of `repeats` runs (less noise from the machine than the mean)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def head_camera(width: int, height: int) -> Camera:
    """A camera 1 m from the origin where a head fills the frame about as in NeRSemble."""
    focal = 3.7 * width
    K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
    world_2_cam = np.eye(4)
    world_2_cam[2, 3] = 1.0
    return Camera(serial="bench", K=K, world_2_cam=world_2_cam, width=width, height=height)


def head_like_meshes() -> dict[str, trimesh.Trimesh]:
    """Ellipsoids of head size (0.16 x 0.23 x 0.2 m) with about 5k and 10k faces."""
    meshes = {
        "icosphere 5k": trimesh.creation.icosphere(subdivisions=4),
        "uv sphere 10k": trimesh.creation.uv_sphere(count=(51, 51)),
    }
    for mesh in meshes.values():
        mesh.vertices *= [0.08, 0.115, 0.1]
    return meshes


def render_view(*, scene: Scene, vertices: np.ndarray, camera: Camera) -> np.ndarray:
    """What the synthetic subject does per view: rasterize, interpolate UVs and normals, shade."""
    fragments = rasterize(scene=scene, camera=camera)
    uv = interpolate(fragments=fragments, attribute=vertices[:, :2] + 0.5)
    normals = smooth_normals(fragments=fragments, vertices=vertices)
    texture = np.full((1024, 1024, 3), 0.5)
    return shade(fragments=fragments, texture=texture, uv=uv, normals=normals, camera=camera)


def bench_render() -> None:
    for name, mesh in head_like_meshes().items():
        build = best_seconds(partial(Scene, vertices=mesh.vertices, faces=mesh.faces))
        scene = Scene(vertices=mesh.vertices, faces=mesh.faces)
        print(f"{name}: {len(mesh.faces)} faces, scene build {build * 1e3:.1f} ms")
        for width, height in SIZES:
            camera = head_camera(width, height)
            coverage = rasterize(scene=scene, camera=camera).mask.mean()
            raster = best_seconds(partial(rasterize, scene=scene, camera=camera))
            view = best_seconds(
                partial(render_view, scene=scene, vertices=mesh.vertices, camera=camera)
            )
            rays = width * height
            print(
                f"  {width}x{height}: coverage {coverage:.0%}, rasterize "
                f"{raster * 1e3:.1f} ms ({rays / raster / 1e6:.2f} M rays/s), "
                f"rasterize+interpolate+shade {view * 1e3:.1f} ms per view"
            )


def bench_sample_head() -> None:
    """The sample subject's views at 550x802 (scale 4), with its hair shell and bare."""
    from tasks.sample import world as sample_world  # the sample world is heavy to import

    def stand_in(*, root: object, model: object) -> dict[str, np.ndarray]:
        one = {"lmk_face_idx": [0], "lmk_b_coords": [[1.0, 0, 0]], "lmk_mediapipe_idx": [0]}
        return {k: np.asarray(v) for k, v in one.items()}

    sample_world.cached_landmark_embedding = stand_in  # the embedding takes a minute
    config = sample_world.SampleSubjectConfig(subject="900", frames_per_sequence=1)
    start = time.perf_counter()
    world = sample_world.build_world(config=config, root=None)
    print(f"sample world (head, texture, hair shell): {time.perf_counter() - start:.1f} s")
    frame = next(world.posed_frames(config.sequences[0]))
    bare = sample_world.pose_frame(model=world.model, vertices=frame.vertices)
    start = time.perf_counter()
    frame.hair_canonical(world.model)
    print(
        f"  hair canonical coordinates of one frame (shared by its views): "
        f"{time.perf_counter() - start:.2f} s"
    )
    for label, posed in (("with hair", frame), ("bare head", bare)):
        view = best_seconds(
            partial(
                sample_world.render_view,
                world,
                posed,
                sequence=config.sequences[0],
                frame_index=0,
                serial="222200037",
            )
        )
        truth = best_seconds(
            partial(sample_world.ground_truth_view, world, posed, serial="222200037"), 2
        )
        print(f"  {label}: view {view * 1e3:.0f} ms, truth maps {truth * 1e3:.0f} ms")


def bench_face_landmarker() -> None:
    photo = skimage.data.astronaut()
    with FaceLandmarkerRunner(config=FaceLandmarkerConfig()) as runner:
        for width, height in SIZES:
            image = skimage.transform.resize(photo, (height, width), anti_aliasing=True)
            image = np.round(image * 255).astype(np.uint8)
            detected = runner.detect(image=image).detected
            seconds = best_seconds(partial(runner.detect, image=image), repeats=20)
            print(
                f"face landmarker {width}x{height}: {seconds * 1e3:.1f} ms per image, "
                f"detected={detected}"
            )


def main() -> None:
    bench_render()
    bench_sample_head()
    bench_face_landmarker()


if __name__ == "__main__":
    main()
