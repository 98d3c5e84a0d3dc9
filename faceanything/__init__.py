"""Face Anything: the paper's network (3.1-3.2, 4.1) trained on the shards the pipeline writes.

Rooms by paper part, each importing only the floor and the rooms named below it:

    floor       geometry (cameras, rays, DA3's patch grid and scale), checkpoint (files of
                ours, DA3's and the authors'), correspondence (eq. 2 in canonical space),
                metrics (4.2), outputs (atomic file writers)
    data        batches from shards (3.1, B.1): multi-view and temporal batches, co-jitter
    model       the network (3.1, eq. 1) and running it over frames in anchored windows
    train       losses (eqs. 3-6), the training loop (4.1; one process or torchrun DDP)
    evaluate    the paper's metrics on held-out shards (tables 1-4)
    predict     maps, point clouds, cameras and tracks for any video or images

data and model import neither each other; train, evaluate and predict import none of each
other.
"""
