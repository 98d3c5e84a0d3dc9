"""Inference on any video or images (maps, point clouds, cameras) and tracks by eq. 2:
`python -m faceanything.predict`."""
