"""What each stage of the dataset pipeline does, as plain functions on plain data (no Luigi).

The stages, in the paper's order (section 3.3):

    inventory       every camera's frame count, or why it is unusable
    signals         MediaPipe on the frontal camera (face_landmarker wraps MediaPipe)
    selection       farthest point sampling on blendshapes, then head pose
    frames          the selected timesteps of all 16 cameras, colour-corrected, shrunk
    sfm             pycolmap SfM, aligned to the calibration
    mvs, mvs_torch  dense depth and normals (COLMAP PatchMatch, or ours in PyTorch)
    fusion          COLMAP's stereo fusion
    reconstruction  sfm + mvs + fusion of one timestep
    tracking        multi-view FLAME tracking of a subject (flame_tracking does the fitting)
    canonical       deformation transfer: canonical maps and cloud
    assemble        a subject's tracked timesteps into shard samples
    report          per-timestep and per-subject reports
    report_page     the dataset's static HTML report (one row per subject, a page each)

Rooms, one kind of thing each: `formats/` (what is read and written: NeRSemble's layout,
video, colour, EXR, cameras, COLMAP cameras, PLY, the shard format, atomic writing),
`sample/` (the synthetic sample subject and its ground truth), `pictures/` (every picture).
`progress` is the callback type the stages report through.
"""
