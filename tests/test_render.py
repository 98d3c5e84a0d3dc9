"""The ray-casting renderer against analytic truth: spheres, planes, bilinear textures."""

import numpy as np
import pytest
import trimesh
from scipy.ndimage import binary_dilation
from scipy.spatial.transform import Rotation

from tasks.formats.cameras import Camera, backproject_depth, pixel_rays, project
from tasks.pictures.render import (
    Scene,
    interpolate,
    light,
    overlay_mesh,
    rasterize,
    sample_texture,
    shade,
)

WIDTH, HEIGHT, FOCAL = 160, 200, 600.0


@pytest.fixture
def camera() -> Camera:
    """A rotated, translated camera with the principal point at the image centre."""
    rotation = Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix()
    center = np.array([0.2, -0.1, 0.4])
    world_2_cam = np.eye(4)
    world_2_cam[:3, :3] = rotation
    world_2_cam[:3, 3] = -rotation @ center
    K = np.array([[FOCAL, 0, (WIDTH - 1) / 2], [0, FOCAL, (HEIGHT - 1) / 2], [0, 0, 1]])
    return Camera(serial="test", K=K, world_2_cam=world_2_cam, width=WIDTH, height=HEIGHT)


def on_axis(camera: Camera, distance: float) -> np.ndarray:
    """The world point `distance` metres in front of the camera on its optical axis."""
    return camera.center + distance * camera.world_2_cam[2, :3]


def sphere_depth(camera: Camera, center: np.ndarray, radius: float) -> tuple:
    """Analytic z-depth of the ray-sphere first hit per pixel and the ray's closest distance
    to the centre, both (H, W)."""
    origin, dirs = pixel_rays(camera)
    oc = origin - center
    a = np.sum(dirs * dirs, axis=1)
    b = dirs @ oc
    c = oc @ oc - radius**2
    disc = b * b - a * c
    depth = (-b - np.sqrt(np.where(disc >= 0, disc, np.nan))) / a
    closest = np.linalg.norm(oc + (-b / a)[:, None] * dirs, axis=1)
    shape = (camera.height, camera.width)
    return depth.reshape(shape), closest.reshape(shape)


def test_sphere_depth_and_mask_match_analytic(camera: Camera) -> None:
    radius, distance = 0.1, 0.9
    center = on_axis(camera, distance)
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    fragments = rasterize(
        scene=Scene(vertices=mesh.vertices + center, faces=mesh.faces), camera=camera
    )
    truth, closest = sphere_depth(camera, center, radius)

    inside = closest < 0.9 * radius
    assert inside.sum() > 10_000
    assert fragments.mask[inside].all()
    assert np.nanmax(np.abs(fragments.depth[inside] - truth[inside])) < 0.5e-3
    # The faceted sphere lies inside the true one: never nearer than the analytic surface.
    assert np.all(fragments.depth[inside] >= truth[inside] - 1e-9)

    outside = closest > 1.01 * radius
    assert not fragments.mask[outside].any()
    assert np.isnan(fragments.depth[~fragments.mask]).all()
    assert (fragments.triangle[~fragments.mask] == -1).all()
    disk_radius = FOCAL * radius / np.sqrt(distance**2 - radius**2)
    area = np.pi * disk_radius**2
    assert abs(fragments.mask.sum() - area) / area < 0.01


@pytest.mark.parametrize("flip", [False, True])
def test_tilted_plane_depth_is_exact(camera: Camera, flip: bool) -> None:
    """Depth on a plane equals the analytic ray-plane depth, seen from either side."""
    center = on_axis(camera, 0.7)
    normal = camera.world_2_cam[:3, :3].T @ np.array([0.3, -0.2, -1.0])
    normal /= np.linalg.norm(normal)
    a = np.cross(normal, [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(normal, a)
    vertices = center + 2.0 * np.array([-a - b, a - b, a + b, -a + b])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    fragments = rasterize(
        scene=Scene(vertices=vertices, faces=faces[:, ::-1] if flip else faces), camera=camera
    )
    origin, dirs = pixel_rays(camera)
    truth = ((center - origin) @ normal / (dirs @ normal)).reshape(HEIGHT, WIDTH)
    assert fragments.mask.all()
    np.testing.assert_allclose(fragments.depth, truth, rtol=0, atol=1e-9)


def test_interpolated_positions_are_backprojected_depth(camera: Camera) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.12)
    vertices = mesh.vertices * [1.0, 1.3, 0.8] + on_axis(camera, 0.8)
    fragments = rasterize(scene=Scene(vertices=vertices, faces=mesh.faces), camera=camera)
    positions = interpolate(fragments=fragments, attribute=vertices)
    points = backproject_depth(fragments.depth, camera)
    mask = fragments.mask
    assert np.abs(positions[mask] - points[mask]).max() < 1e-6
    assert np.isnan(positions[~mask]).all()
    bary = fragments.barycentric[mask]
    np.testing.assert_allclose(bary.sum(axis=1), 1.0, atol=1e-12)
    assert bary.min() > -1e-6 and bary.max() < 1 + 1e-6
    corner = interpolate(fragments=fragments, attribute=vertices[mesh.faces])
    np.testing.assert_allclose(corner[mask], positions[mask], atol=1e-15)


def test_projected_vertex_lands_on_an_incident_triangle(camera: Camera) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    center = on_axis(camera, 0.8)
    vertices = mesh.vertices + center
    fragments = rasterize(scene=Scene(vertices=vertices, faces=mesh.faces), camera=camera)
    to_cam = camera.center - vertices
    facing = np.sum(mesh.vertex_normals * to_cam, axis=1) / np.linalg.norm(to_cam, axis=1) > 0.5
    pixels, _ = project(vertices[facing], camera)
    cols, rows = np.round(pixels).astype(int).T
    seen = fragments.triangle[rows, cols]
    incident = mesh.vertex_faces[facing]
    assert facing.sum() > 100
    assert all(tri in faces for tri, faces in zip(seen, incident, strict=True))


def test_bilinear_texture_lookup_follows_obj_convention() -> None:
    """A texture linear in (column, row) is reproduced exactly by bilinear lookup."""
    ht, wt = 7, 11
    rows, cols = np.mgrid[0:ht, 0:wt].astype(np.float64)
    texture = np.stack([cols, rows, np.ones_like(cols)], axis=-1)
    uv = np.random.default_rng(0).uniform(0, 1, size=(5, 4, 2))
    uv[0, 0] = np.nan
    out = sample_texture(texture=texture, uv=uv)
    np.testing.assert_allclose(out[..., 0].ravel()[1:], (uv[..., 0] * (wt - 1)).ravel()[1:])
    np.testing.assert_allclose(out[..., 1].ravel()[1:], ((1 - uv[..., 1]) * (ht - 1)).ravel()[1:])
    assert np.isnan(out[0, 0]).all()
    corners = sample_texture(texture=texture, uv=np.array([[[0.0, 1.0], [1.0, 0.0]]]))
    np.testing.assert_array_equal(corners[0], [[0, 0, 1], [wt - 1, ht - 1, 1]])


def test_lambertian_shading_of_a_plane(camera: Camera) -> None:
    normal = -camera.world_2_cam[2, :3]
    a, b = camera.world_2_cam[0, :3], camera.world_2_cam[1, :3]
    center = on_axis(camera, 0.5)
    vertices = center + np.array([-a - b, a - b, a + b, -a + b])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    fragments = rasterize(scene=Scene(vertices=vertices, faces=faces), camera=camera)
    tilted = Rotation.from_rotvec(np.radians(60) * a).apply(normal)
    albedo = np.array([0.2, 0.5, 0.8])
    image = shade(
        fragments=fragments,
        texture=albedo.reshape(1, 1, 3),
        uv=np.zeros((HEIGHT, WIDTH, 2)),
        normals=np.broadcast_to(-normal, (HEIGHT, WIDTH, 3)),  # flipped towards the camera
        camera=camera,
        lights=((tuple(normal), 0.6), (tuple(tilted), 0.4)),
        ambient=0.1,
    )
    np.testing.assert_allclose(
        image, np.broadcast_to(albedo * (0.1 + 0.6 + 0.4 * 0.5), image.shape)
    )


def test_light_takes_albedo_and_per_pixel_specular(camera: Camera) -> None:
    """`light` shades a per-pixel albedo like `shade` shades a texture, and a per-pixel
    specular strength adds the highlight only where it is set."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    vertices = mesh.vertices + on_axis(camera, 0.8)
    fragments = rasterize(scene=Scene(vertices=vertices, faces=mesh.faces), camera=camera)
    normals = interpolate(fragments=fragments, attribute=mesh.vertex_normals)
    colour = np.array([0.3, 0.2, 0.1])
    textured = shade(
        fragments=fragments,
        texture=colour.reshape(1, 1, 3),
        uv=np.zeros((HEIGHT, WIDTH, 2)),
        normals=normals,
        camera=camera,
        specular=0.5,
    )
    mask = fragments.mask
    albedo = np.where(mask[..., None], colour, np.nan)
    left = np.zeros((HEIGHT, WIDTH))
    left[:, : WIDTH // 2] = 0.5
    lit = light(mask=mask, albedo=albedo, normals=normals, camera=camera, specular=left)
    plain = light(mask=mask, albedo=albedo, normals=normals, camera=camera)
    both = mask & (left > 0)
    np.testing.assert_allclose(lit[both], textured[both], atol=1e-12)
    np.testing.assert_allclose(lit[mask & ~both], plain[mask & ~both], atol=1e-12)
    assert np.isnan(lit[~mask]).all()


@pytest.mark.parametrize("style", ["shaded", "wireframe"])
def test_overlay_changes_only_mesh_pixels(camera: Camera, style: str) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    vertices = mesh.vertices + on_axis(camera, 0.8)
    image = np.random.default_rng(1).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    out = overlay_mesh(image=image, vertices=vertices, faces=mesh.faces, camera=camera, style=style)
    assert out.dtype == np.uint8 and out.shape == image.shape
    mask = rasterize(scene=Scene(vertices=vertices, faces=mesh.faces), camera=camera).mask
    changed = np.any(out != image, axis=-1)
    assert changed.sum() > 200
    if style == "shaded":
        np.testing.assert_array_equal(changed, mask)
    else:
        assert not changed[~binary_dilation(mask)].any()
        assert changed.sum() < 0.5 * mask.sum()
