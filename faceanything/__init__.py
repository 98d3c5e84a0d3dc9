"""Face Anything's thin model package: reads the shards the pipeline writes (`tasks.formats.shards`)
and finds correspondences in canonical space (paper eq. 2)."""
