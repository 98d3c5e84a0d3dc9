"""The per-timestep depth picture on maps with known values: panels, colours, blanks."""

from pathlib import Path

import cv2
import numpy as np

from tasks.formats.exr import write_exr
from tasks.frames import image_path
from tasks.mvs import maps_path
from tasks.pictures.stages import depth_picture


def test_depth_picture_puts_image_depth_and_normals_side_by_side(tmp_path: Path) -> None:
    height, width = 40, 30
    serials = ["222200037", "222200038", "222200039"]
    for i, serial in enumerate(serials):
        image = np.full((height, width, 3), 40 * (i + 1), np.uint8)
        path = image_path(tmp_path / "frames", serial)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
    depth = np.full((height, width), 1.0, np.float32)
    depth[:, :15] = 2.0  # two depths: the ends of the colour scale
    depth[0, 0] = np.nan
    normal = np.zeros((height, width, 3), np.float32)
    normal[..., 2] = 1.0
    (tmp_path / "maps").mkdir()
    for serial in serials[:2]:  # the third view has no maps
        write_exr(maps_path(tmp_path / "maps", serial), {"depth": depth, "normal": normal})

    path = depth_picture(
        frames_dir=tmp_path / "frames",
        maps_dir=tmp_path / "maps",
        serials=serials,
        path=tmp_path / "depth.png",
        columns=2,
    )
    grid = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert grid.shape == (2 * height, 2 * 3 * width, 3)  # 2 rows of 2 views, one blank
    second = grid[:height, 3 * width :]  # the second view's cell
    assert (second[height - 1, width - 1] == 80).all()  # its image (label at the top left)
    depth_panel, normal_panel = second[:, width : 2 * width], second[:, 2 * width :]
    assert (depth_panel[0, 0] == 255).all()  # no depth: white
    assert not np.array_equal(depth_panel[20, 5], depth_panel[20, 25])  # 2 m and 1 m differ
    np.testing.assert_allclose(normal_panel[20, 20], [128, 128, 255], atol=1)  # +z
    third = grid[height:, : 3 * width]
    assert (third[:, width:] == 255).all()  # a view without maps: white panels
    assert (grid[height:, 3 * width :] == 255).all()  # the padding cell
