"""Every picture a stage or a command draws: selection, depth, tracking overlay, shard
figure, the sample's sheets, the head model; and the ray-cast renderer they draw meshes with."""
