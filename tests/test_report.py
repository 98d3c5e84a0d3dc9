"""The subject report on small tables with known answers: where each timestep was dropped."""

from pathlib import Path

import pandas as pd

from tasks.report import RECONSTRUCTION_COLUMNS, subject_report, timestep_table
from tasks.selection import Selection

NO_CCM = "043/calibration/color_calibration.json"


def _reconstruction() -> pd.DataFrame:
    rows = [
        ("EXP-1-head", 0, "ok", "", 1.0),
        ("EXP-1-head", 5, "dropped", "SfM: registered 15/16; not registered: 222200049", None),
        ("EMO-1-shout+laugh", 3, "ok", "", 2.0),
        (
            "EMO-1-shout+laugh",
            7,
            "dropped",
            "SfM: registered 15/16; not registered: 222200049",
            None,
        ),
    ]
    table = pd.DataFrame(
        [
            {
                "sequence": s,
                "frame": f,
                "criterion": "blendshape",
                "status": status,
                "reason": reason,
                "registered": 16 if status == "ok" else 15,
                "sfm_mode": "mapping",
                "dense_poses": "sfm (fallback: calibrated triangulation x)"
                if f == 3
                else "calibrated",
                "median_residual_mm": 1.0,
                "sfm_seconds": 2.0,
                "depth_seconds": depth,
                "fusion_seconds": depth and 0.5,
                "fused_points": 1000,
                "uncorrected": f"no colour calibration: {NO_CCM} missing" if f in (0, 5) else "",
                "folder": "x",
            }
            for s, f, status, reason, depth in rows
        ]
    )
    assert list(table.columns) == RECONSTRUCTION_COLUMNS
    return table


def _tracking() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sequence": ["EXP-1-head", "EMO-1-shout+laugh"],
            "frame": [0, 3],
            "kept": [True, False],
            "reason": ["", "landmark residual 51.0 px > 9.2 px threshold"],
            "landmark_px": [3.0, 51.0],
            "point_mm": [0.2, 0.3],
            "num_views": [16, 16],
            "num_points": [4000, 4000],
        }
    )


def test_timestep_table_names_the_stage_and_reason_of_every_drop() -> None:
    table = timestep_table(reconstruction=_reconstruction(), tracking=_tracking())
    assert list(table.kept) == [True, False, False, False]
    assert list(table.dropped_at) == ["", "reconstruction", "tracking", "reconstruction"]
    assert table.drop_reason[2].startswith("landmark residual 51.0 px")
    assert "222200049" in table.drop_reason[1]


def test_report_counts_groups_reasons_and_sums_seconds() -> None:
    table = timestep_table(reconstruction=_reconstruction(), tracking=_tracking())
    selection = Selection(table=table[["sequence", "frame", "criterion"]], warnings=())
    inventory = pd.DataFrame(
        {"sequence": ["EXP-1-head"], "serial": ["222200037"], "frames": [16], "problem": [""]}
    )
    report = subject_report(
        subject="900",
        data=Path("data/900"),
        inventory=inventory,
        selection=selection,
        timesteps=table,
        tracking_seconds={"observations": 3.0, "fit": 4.0},
        shard=Path("out/shards/900"),
        shard_rows=16,
        canonical_views=pd.DataFrame(
            {
                "serial": ["222200037", "222200038"],
                "depth_fraction": [0.3, 0.2],
                "depth_pixels": [600, 400],
                "transferred_pixels": [590, 400],
                "dropped_pixels": [10, 0],
                "pixels_0_50mm": [590, 400],
                "pixels_50mm_up": [10, 0],
            }
        ),
        max_distance=0.05,
    )
    assert (report["selected"], report["reconstructed"], report["tracked"]) == (4, 2, 1)
    assert (
        "2 reconstructed (2 with 16/16 registered by SfM; 1 with depth on SfM poses"
        in (report["summary"][0])
    )
    assert report["summary"][1] == (
        "dropped at reconstruction: 2 x SfM: registered 15/16; not registered: 222200049"
    )
    assert report["summary"][2].startswith("dropped at tracking: 1 x landmark residual")
    assert report["summary"][3] == (
        f"not colour-corrected: 2 of 4 timesteps (no colour calibration: {NO_CCM} missing)"
    )
    assert report["summary"][4] == (
        "canonical maps: 99.00% of 1,000 depth pixels transferred, 1.00% farther than 5 cm "
        "from the tracked surface dropped"
    )
    assert report["canonical"] == {
        "depth_pixels": 1000,
        "transferred_pixels": 990,
        "dropped_pixels": 10,
        "pixels_0_50mm": 990,
        "pixels_50mm_up": 10,
    }
    assert report["summary"][5] == (
        "per reconstructed timestep (median): SfM 2.0 s, depth 1.5 s, camera-centre residual "
        "1.00 mm"
    )
    assert report["seconds"] == {
        "sfm": 8.0,
        "depth": 3.0,
        "fusion": 1.0,
        "tracking_observations": 3.0,
        "tracking_fit": 4.0,
    }


def test_nothing_selected_gives_an_empty_table_and_says_so() -> None:
    empty = pd.DataFrame(columns=RECONSTRUCTION_COLUMNS)
    tracking = _tracking().iloc[:0]
    table = timestep_table(reconstruction=empty, tracking=tracking)
    assert table.empty and "kept" in table.columns
    report = subject_report(
        subject="900",
        data=Path("data/900"),
        inventory=pd.DataFrame(columns=["sequence", "serial", "frames", "problem"]),
        selection=Selection(table=table, warnings=("subject 900: only 0 frames with a face",)),
        timesteps=table,
        tracking_seconds={},
        shard=Path("out/shards/900"),
        shard_rows=0,
        canonical_views=pd.DataFrame(),
        max_distance=0.05,
    )
    assert report["summary"][-1] == "subject 900: no timestep kept, its shard is empty"
