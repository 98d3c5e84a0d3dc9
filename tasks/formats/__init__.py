"""What the pipeline reads and writes, one module per format: NeRSemble's layout, video,
colour calibration, EXR maps, cameras, COLMAP cameras, the shard format, PLY clouds and
atomic writing. Nothing here imports a stage."""
