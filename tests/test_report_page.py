"""The dataset report page on small subjects written in the real formats (report.json and
report.parquet from `tasks.report`, PNG pictures, an empty shard from the shard writer): rows,
sort keys, failed subjects first, every link and image resolving, thumbnails reused.

The slow case opens the page of a built sample in Debian's headless chromium (selenium):
no console errors, every image loads, every link resolves, a header click reorders rows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import fields
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from flame_tracking.tracker import TimestepReport
from pipeline import report as report_command
from tasks import report, report_page
from tasks.formats import shards
from tasks.formats.atomic import write_json
from tasks.sample.subject import SampleSubjectConfig, generate_sample_subject
from tasks.selection import Selection

SERIAL = "222200037"
SFM_DROP = "SfM: registered 15/16; not registered: 222200049"
OUTLIER = "landmark residual 51.0 px > 9.2 px threshold"


def _png(path: Path, *, size: tuple[int, int] = (240, 160), value: int = 120) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((size[1], size[0], 3), value, np.uint8)
    cv2.circle(image, (size[0] // 2, size[1] // 2), min(size) // 3, (40, 90, 200), -1)
    assert cv2.imwrite(str(path), image)


def _records(outcomes: list[str], folder: Path) -> tuple[list[dict], list[str], list[dict]]:
    """Reconstruction records, their folders (with depth.png or the frontal frame) and the
    tracker's residual rows, for outcomes 'kept', 'sfm' (15/16) or 'outlier'."""
    records, folders, tracked = [], [], []
    for frame, outcome in enumerate(outcomes):
        sequence = "EXP-1-head" if frame % 2 else "EMO-1-shout+laugh"
        step = folder / "timesteps" / f"{sequence}_{frame:05d}"
        _png(step / "frames-ab12cd34" / "images" / f"cam_{SERIAL}.png")
        recon = step / "recon-0123abcd"
        folders.append(str(recon))
        sfm = {"registered": 16, "median_residual_mm": 1.0 + frame, "seconds": {"map": 2.0}}
        if outcome == "sfm":
            recon.mkdir(parents=True)
            sfm["registered"] = 15
            records.append({"status": "dropped", "reason": SFM_DROP, "sfm": sfm, "uncorrected": ""})
            continue
        _png(recon / "depth.png", size=(600, 200), value=60 + 20 * frame)
        records.append(
            {
                "status": "ok",
                "reason": "",
                "sfm": sfm,
                "mvs": {"seconds": 3.0},
                "fusion": {"seconds": 1.0, "points": 5000},
                "uncorrected": "",
            }
        )
        tracked.append(
            {
                "sequence": sequence,
                "frame": frame,
                "kept": outcome == "kept",
                "reason": "" if outcome == "kept" else OUTLIER,
                "landmark_px": 2.0 + frame if outcome == "kept" else 51.0,
                "point_mm": 0.3,
                "num_views": 16,
                "num_points": 4000,
            }
        )
    return records, folders, tracked


def fake_subject(out: Path, subject: str, outcomes: list[str]) -> None:
    """A built subject as `BuildSubject` leaves it, through the report's own functions."""
    folder = out / "subjects" / subject
    records, folders, tracked = _records(outcomes, folder)
    selected = pd.DataFrame(
        {
            "sequence": [Path(f).parent.name.rsplit("_", 1)[0] for f in folders],
            "frame": range(len(outcomes)),
            "criterion": "blendshape",
            "order": range(len(outcomes)),
        }
    )
    timesteps = report.timestep_table(
        reconstruction=report.reconstruction_table(
            selected=selected, records=records, folders=folders
        ),
        tracking=pd.DataFrame(tracked, columns=[f.name for f in fields(TimestepReport)]),
    )
    kept = int(timesteps.kept.sum())
    summary = report.subject_report(
        subject=subject,
        data=out / "data" / subject,
        inventory=pd.DataFrame(
            {"sequence": ["EXP-1-head"], "serial": [SERIAL], "frames": [16], "problem": [""]}
        ),
        selection=Selection(table=selected, warnings=()),
        timesteps=timesteps,
        tracking_seconds={"observations": 2.0, "fit": 5.0},
        shard=out / "shards" / subject,
        shard_rows=16 * kept,
        canonical_views=pd.DataFrame(),
        max_distance=0.05,
    )
    timesteps.to_parquet(folder / "report.parquet", compression="zstd", index=False)
    write_json(folder / "report.json", summary)
    shards.write_shard(samples=[], path=out / "shards" / subject)
    _png(folder / "selection.png", size=(800, 200))
    if kept:
        _png(folder / "tracking-aa-bb" / "overlay.png", size=(600, 400))
        _png(folder / "shard.png", size=(800, 300))


class Page(HTMLParser):
    """What a test needs of a page: rows with their sort keys, links, image sources."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.feed(path.read_text())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "data-subject" in a:
            self.rows.append({"subject": a["data-subject"], "class": a["class"], "keys": []})
        elif tag == "td" and self.rows and "data-sort" in a:
            self.rows[-1]["keys"].append(a["data-sort"])
        elif tag in ("a", "link") and a.get("href"):
            self.links.append(a["href"])
        elif tag in ("img", "script") and a.get("src"):
            self.images.append(a["src"])


def _target(page: Path, url: str) -> Path:
    return (page.parent / urllib.parse.unquote(url)).resolve()


@pytest.fixture()
def output(tmp_path: Path) -> Path:
    """Built 010 (one SfM drop, one outlier), 011 with none kept, 012 stopped after its
    inventory, 013 never started."""
    out = tmp_path / "out"
    fake_subject(out, "010", ["kept", "sfm", "kept", "outlier"])
    fake_subject(out, "011", ["sfm", "sfm"])
    (out / "subjects" / "012").mkdir(parents=True)
    pd.DataFrame({"sequence": ["EXP-1-head"]}).to_parquet(
        out / "subjects" / "012" / "inventory.parquet"
    )
    return out


def test_rows_failed_first_with_counts_and_sort_keys(output: Path) -> None:
    page = report_page.build_report_page(
        output_root=output, subjects=["010", "011", "012", "013"], eval_subjects=["010"]
    )
    rows = Page(page.index).rows
    assert [r["subject"] for r in rows] == ["012", "013", "011", "010"]
    assert [r["class"] for r in rows] == ["failed", "failed", "empty", "built"]
    built = dict(
        zip(
            ("subject", "status", "selected", "recon", "tracked", "kept", "dropped"),
            rows[-1]["keys"][:7],
            strict=True,
        )
    )
    assert built == {"subject": "010", "status": "2", "selected": "4", "recon": "3",
                     "tracked": "3", "kept": "2", "dropped": "2"}  # fmt: skip
    failed = page.rows[0]
    assert "last finished stage: inventory" in failed.error
    assert page.rows[1].error.startswith("not built")
    assert page.rows[2].error == "no timestep kept"
    assert page.rows[3].drops == (
        ("reconstruction: SfM: registered 15/16", 1),
        ("tracking: landmark residual > threshold", 1),
    )
    assert page.rows[3].eval_split and page.rows[3].sfm_residual_mm == 3.0
    text = page.index.read_text()
    assert "eval" in text and '<script src="sort.js"' in text and "http" not in text


def test_every_link_and_image_resolves(output: Path) -> None:
    page = report_page.build_report_page(output_root=output, subjects=["010", "011", "012"])
    folder = page.index.parent
    pages = [page.index, *sorted((folder / "subjects").glob("*.html"))]
    assert len(pages) == 4
    for html in pages:
        parsed = Page(html)
        for url in parsed.links + parsed.images:
            assert _target(html, url).is_file(), f"{html.name}: {url}"
    subject = Page(folder / "subjects" / "010.html")
    thumbs = [u for u in subject.images if "thumbs/" in u]
    assert len(thumbs) == 3 + 4  # selection, overlay, shard; 3 depth pictures, 1 frame
    full = [u for u in subject.links if u.endswith(".png")]
    assert any(u.endswith("depth.png") for u in full) and any("cam_" in u for u in full)
    config = report_page.ReportPageConfig()
    html = folder / "subjects" / "010.html"
    widths = {
        Path(u).name.split("-")[0]: cv2.imread(str(_target(html, u))).shape[1] for u in thumbs
    }
    assert widths["selection"] == config.picture_width  # 800 px wide, shrunk
    assert widths["depth"] == config.thumbnail_width  # 600 px wide, shrunk
    assert widths["cam_222200037"] == 240  # the frame of the SfM drop, small already


def test_rebuild_reuses_thumbnails_and_fingerprint_follows_reports(output: Path) -> None:
    subjects = ["010", "011"]
    first = report_page.build_report_page(output_root=output, subjects=subjects)
    identity = json.loads((output / "report" / report_page.INPUTS_FILE).read_text())["identity"]
    assert (
        identity
        == first.fingerprint
        == report_page.inputs_fingerprint(output_root=output, subjects=subjects)
    )
    again = report_page.build_report_page(output_root=output, subjects=subjects)
    assert again.thumbnails_made == 0 and again.thumbnails_reused == first.thumbnails_made
    assert not list(output.glob(".report*")), "no temporary folder is left behind"
    selection = output / "subjects" / "010" / "selection.png"
    _png(selection, size=(900, 200), value=30)
    path = output / "subjects" / "011" / "report.json"
    write_json(path, json.loads(path.read_text()) | {"selected": 3})
    changed = report_page.inputs_fingerprint(output_root=output, subjects=subjects)
    assert changed != first.fingerprint
    third = report_page.build_report_page(output_root=output, subjects=subjects)
    assert third.thumbnails_made == 1 and third.fingerprint == changed


def test_drop_kind_drops_measured_figures_only() -> None:
    assert report_page.drop_kind(OUTLIER) == "landmark residual > threshold"
    assert report_page.drop_kind(SFM_DROP) == "SfM: registered 15/16"
    assert report_page.drop_kind("depth: no valid pixels") == "depth: no valid pixels"


def test_command_builds_from_a_manifest(output: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"subjects": ["010", "12"]}))
    assert report_command.main([str(output), "--manifest", str(manifest)]) == 0
    assert [r["subject"] for r in Page(output / "report" / "index.html").rows] == ["012", "010"]
    assert report_command.subjects_under(output) == ["010", "011", "012"]


# --- the browser test on a built sample ------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
SAMPLE_SETTINGS = """[faceanything]
data_root = {data}
output_root = {out}
profile = sample
[sample]
frames_per_sequence = 3
blendshape_count = 2
pose_count = 1
"""


@pytest.fixture(scope="module")
def built_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(output root, data root) of a built sample. FACEANYTHING_BUILT_SAMPLE=ROOT names a
    build to reuse (ROOT/out, ROOT/data/sample; only read), else a small one is built."""
    given = os.environ.get("FACEANYTHING_BUILT_SAMPLE")
    if given:
        return Path(given) / "out", Path(given) / "data" / "sample"
    root = tmp_path_factory.mktemp("report_sample")
    data = root / "data"
    generate_sample_subject(config=SampleSubjectConfig(subject="900", frames_per_sequence=3),
                            root=data)  # fmt: skip
    (root / "luigi.cfg").write_text(SAMPLE_SETTINGS.format(data=data, out=root / "out"))
    (root / "manifest.json").write_text(json.dumps({"subjects": ["900"]}))
    command = [sys.executable, "-m", "pipeline", "--manifest", "manifest.json"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "out", data


def mirror(built: Path, out: Path, subject: str, copies: list[str]) -> None:
    """`out` with `subject` of `built` under its own id and each of `copies` (symlinks)."""
    for name in [subject, *copies]:
        for kind in ("subjects", "shards"):
            (out / kind).mkdir(parents=True, exist_ok=True)
            (out / kind / name).symlink_to((built / kind / subject).resolve())


def _driver(profile: Path):  # noqa: ANN202 - selenium is imported only here
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*BROWSER_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _check_page(driver, url: str) -> int:  # noqa: ANN001
    """No console message, every image loaded (lazy ones made eager), every link a file;
    the number of images."""
    driver.get(url)
    loaded = driver.execute_script(
        "const images = Array.from(document.images);"
        "images.forEach(i => { i.loading = 'eager'; });"
        "return Promise.all(images.map(i => i.decode().then(() => [i.src, i.naturalWidth > 0],"
        " () => [i.src, false])));"
    )
    assert all(ok for _, ok in loaded), [src for src, ok in loaded if not ok]
    links = driver.execute_script("return Array.from(document.links).map(a => a.href)")
    for link in links:
        assert link.startswith("file://"), link
        assert Path(urllib.request.url2pathname(urllib.parse.urlparse(link).path)).is_file(), link
    console = driver.get_log("browser")
    assert console == [], console
    return len(loaded)


@pytest.mark.slow
@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_page_in_a_real_browser(built_sample: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("selenium", reason="needs selenium (pip install -e '.[test]')")
    built, data = built_sample
    out = tmp_path / "out"
    mirror(built, out, "900", ["901", "902"])
    page = report_page.build_report_page(
        output_root=out, subjects=["900", "901", "902", "999"], data_root=data
    )
    assert page.rows[0].subject == "999" and page.rows[0].status == "failed"
    assert page.rows[1].accuracy is not None and page.rows[1].accuracy.views > 0
    driver = _driver(Path(tempfile.mkdtemp(dir=tmp_path)))
    try:
        assert _check_page(driver, page.index.as_uri()) == 0  # the index stays light
        for subject in ("900", "901", "902"):
            html = out / "report" / "subjects" / f"{subject}.html"
            assert _check_page(driver, html.as_uri()) == 3 + page.rows[1].selected
        _check_page(driver, (out / "report" / "subjects" / "999.html").as_uri())
        driver.get(page.index.as_uri())

        def order() -> list[str]:
            rows = driver.find_elements("css selector", "#subjects tbody tr")
            return [r.get_attribute("data-subject") for r in rows]

        assert order() == ["999", "900", "901", "902"]
        header = driver.find_elements("css selector", "#subjects thead th")[0]
        header.click()
        assert order() == ["900", "901", "902", "999"]
        header.click()
        assert order() == ["999", "902", "901", "900"]
        assert header.get_attribute("aria-sort") == "descending"
        console = driver.get_log("browser")
        assert console == [], console
    finally:
        driver.quit()
