"""Farthest point sampling and the 40 + 10 selection rule, on inputs with known answers; the
slow case selects on the default sample subject's real MediaPipe signals."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import config
from tasks.formats import nersemble
from tasks.sample.subject import SampleSubjectConfig, generate_sample_subject
from tasks.selection import (
    BLENDSHAPE,
    POSE,
    SelectionConfig,
    coverage_radius,
    farthest_point_sampling,
    read_selection,
    select_frames,
    selection_coverage,
    write_selection,
)
from tasks.signals import SignalsConfig, extract_signals, head_rotation_error_deg


def test_fps_on_a_line_picks_ends_then_middle() -> None:
    points = np.linspace(0.0, 10.0, 11)[:, None] + np.array([[0.0]])
    points[0] -= 0.5  # make the left end the unique farthest from the centroid
    assert farthest_point_sampling(points, 3) == [0, 10, 5]


def test_fps_continues_from_chosen_rows_and_never_repeats_them() -> None:
    points = np.arange(11.0)[:, None]
    assert farthest_point_sampling(points, 2, chosen=[0, 10]) == [5, 2]
    assert farthest_point_sampling(points, 20, chosen=[0, 10]) == [5, 2, 7, 1, 3, 4, 6, 8, 9]


def test_fps_covers_better_than_random() -> None:
    rng = np.random.default_rng(0)
    points = rng.random(size=(400, 2))
    chosen = farthest_point_sampling(points, 20)
    fps = coverage_radius(points, chosen)
    random = [coverage_radius(points, list(rng.choice(400, 20, replace=False))) for _ in range(20)]
    assert len(set(chosen)) == 20
    assert fps <= 0.7 * np.median(random)


def _signals(n: int, *, detected: np.ndarray | None = None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    detected = np.ones(n, bool) if detected is None else detected
    return pd.DataFrame(
        {
            "sequence": ["EXP-1-head"] * (n // 2) + ["EMO-1-shout+laugh"] * (n - n // 2),
            "frame": np.r_[np.arange(n // 2), np.arange(n - n // 2)],
            "detected": detected,
            "blendshapes": list(rng.random((n, 52))),
            "rotation": list(rng.normal(scale=0.3, size=(n, 3))),
        }
    )


def test_selection_counts_criteria_and_exclusions() -> None:
    detected = np.ones(60, bool)
    detected[::3] = False
    signals = _signals(60, detected=detected)
    result = select_frames(
        subject="900", signals=signals, config=SelectionConfig(blendshape_count=8, pose_count=4)
    )
    table = result.table
    assert list(table.criterion) == [BLENDSHAPE] * 8 + [POSE] * 4
    assert list(table.order) == list(range(12))
    keys = set(zip(table.sequence, table.frame, strict=True))
    assert len(keys) == 12, "pose picks must be distinct from blendshape picks"
    undetected = set(zip(signals.sequence[~detected], signals.frame[~detected], strict=True))
    assert not keys & undetected, "frames without a face are never chosen"
    assert result.warnings == ()
    again = select_frames(
        subject="900", signals=signals, config=SelectionConfig(blendshape_count=8, pose_count=4)
    )
    pd.testing.assert_frame_equal(table, again.table)


def test_pose_picks_fill_the_pose_gaps_the_blendshape_picks_left() -> None:
    signals = _signals(20)
    rotation = np.zeros((20, 3))
    rotation[[7, 13], 1] = [0.5, -0.5]  # the only turned heads, with average expressions
    signals["rotation"] = list(rotation + np.random.default_rng(1).normal(0, 0.01, (20, 3)))
    average = np.mean(np.stack(signals.blendshapes), axis=0)
    signals.loc[[7, 13], "blendshapes"] = pd.Series([average, average], index=[7, 13])
    table = select_frames(
        subject="900", signals=signals, config=SelectionConfig(blendshape_count=5, pose_count=2)
    ).table
    by_pose = table[table.criterion == POSE].sort_values(["sequence", "frame"])
    expected = signals.loc[[13, 7], ["sequence", "frame"]]  # sorted: EMO-1 before EXP-1
    assert list(zip(by_pose.sequence, by_pose.frame, strict=True)) == list(
        zip(expected.sequence, expected.frame, strict=True)
    )


def test_fewer_valid_frames_than_requested_takes_all_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signals = _signals(10)
    result = select_frames(
        subject="043", signals=signals, config=SelectionConfig(blendshape_count=8, pose_count=4)
    )
    assert len(result.table) == 10
    assert "043" in result.warnings[0]
    assert "043" in caplog.text


def test_selection_round_trips_with_warnings_and_failures(tmp_path) -> None:
    result = select_frames(
        subject="043",
        signals=_signals(6),
        config=SelectionConfig(blendshape_count=4, pose_count=4),
        failures={"EXP-1-head": "cam_222200037.mp4: truncated"},
    )
    write_selection(tmp_path / "s.parquet", result)
    back = read_selection(tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(back.table, result.table)
    assert back.warnings == result.warnings
    assert back.failures == {"EXP-1-head": "cam_222200037.mp4: truncated"}


@pytest.mark.slow
def test_selection_on_the_sample_covers_better_than_random(tmp_path: Path) -> None:
    sample = config.sample()
    generate_sample_subject(
        config=SampleSubjectConfig(
            subject="900", frames_per_sequence=sample.frames_per_sequence, scale=sample.scale
        ),
        root=tmp_path,
    )
    subject = nersemble.load_subject(tmp_path / "900")
    signals = pd.concat(
        [
            extract_signals(
                subject=subject, sequence=s, config=SignalsConfig(downsample=sample.downsample)
            ).table
            for s in nersemble.list_sequences(subject.directory)
        ]
    )
    assert signals.detected.all()
    counts = SelectionConfig(blendshape_count=sample.blendshape_count, pose_count=sample.pose_count)
    chosen = select_frames(subject="900", signals=signals, config=counts).table
    coverage = selection_coverage(signals, chosen)
    assert coverage[BLENDSHAPE] <= 0.7
    assert coverage[POSE] <= 0.7
    truth = pd.read_parquet(tmp_path / "ground_truth" / "900" / "params.parquet")
    assert np.median(head_rotation_error_deg(signals, truth)) < 5.0
