"""``slidesift report``: one self-contained HTML page of a cohort run, and the spread JSON."""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidesift.cli.main import main
from slidesift.errors import ConfigError
from slidesift.io.outputs import FN, FP, OUTLINE, TP, location_map_image, write_png
from slidesift.phantom import he_like_image
from slidesift.rails import (
    Rails,
    RailsAtSize,
    read_spread,
    spread_from_json,
    spread_to_json,
    write_spread,
)
from slidesift.report import MAX_IMAGE_PX, ReportError, build_report, read_cohort, write_report
from slidesift.report.figures import training_figure
from slidesift.report.inputs import read_run
from slidesift.segment_outputs import error_map, overlay
from slidesift.train_run import LOG_COLUMNS

ODD = "a<b&c"  # a slide name that must be escaped
COLUMNS = ("slide,label,vote,jaccard,dice,precision,recall,empty_prediction,kept_tiles,"
           "inference,status,error")  # fmt: skip


def _png(path: Path, seed: int, shape: tuple[int, int] = (24, 32)) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    img[: shape[0] // 2] = (40 * seed % 256, 120, 200)  # a flat band: not noise only
    write_png(path, img)


@dataclass(frozen=True)
class Fixture:
    out: Path
    run: Path
    spread: Path
    slide_images: int  # PNGs the report must embed for the slides


def _cohort(root: Path) -> Path:
    out = root / "seg"
    (out / "alpha").mkdir(parents=True)
    rows = [
        "alpha,LUAD,LUAD,0.812345,0.896,0.9,0.88,0,120,dense,ok,",
        "beta,,LUSC,,,,,,75,dense,ok,",
        f'"{ODD}",LUAD,LUSC,0.5,0.667,0.6,0.7,0,33,tiles,ok,',
        "gamma,LUAD,,,,,,,,,failed,\"SlideReadError: cannot read slide 'gamma.svs'\"",
    ]
    (out / "scores.csv").write_text(COLUMNS + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    for i, kind in enumerate(("overlay", "errors", "locations")):  # per-slide folder layout
        _png(out / "alpha" / f"alpha_{kind}.png", i)
    for i, kind in enumerate(("overlay", "locations")):  # flat layout, no truth
        _png(out / f"beta_{kind}.png", 3 + i)
    for i, kind in enumerate(("overlay", "errors", "locations")):
        _png(out / f"{ODD}_{kind}.png", 5 + i)
    (out / "summary.json").write_text(
        '{"mean_slides": 2.0, "mean_jaccard": 0.656, "mean_dice": 0.78, "mean_precision": 0.75,'
        ' "mean_recall": 0.79, "nonzero_slides": 2.0, "nonzero_jaccard": NaN,'
        ' "classification_accuracy": 0.5}',
        encoding="utf-8",
    )
    ablation = [
        {"condition": c, "rails": True, "smooth": 0, "shrink": 0.0,
         "figures": {"slides": 2.0, "jaccard": j, "dice": 0.7, "precision": 0.6, "recall": 0.8}}
        for c, j in (("rails", 0.61), ("no rails (background only)", 0.42))
    ]  # fmt: skip
    (out / "ablation.json").write_text(json.dumps(ablation), encoding="utf-8")
    return out


def _run(root: Path) -> Path:
    run = root / "run"
    run.mkdir()
    lines = [",".join(LOG_COLUMNS)]
    for e in range(1, 5):
        raw = f"{0.45 + e / 12:.3f},{0.4 + e / 12:.3f},900,40"
        masked = f"{1.2 / e:.4f},{0.5 + e / 12:.3f},{0.45 + e / 12:.3f}"
        lines.append(f"{e},{1 / e:.4f},{0.5 + e / 10:.3f},{raw},{masked},12.5,800")
    (run / "log.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (run / "run.json").write_text(
        json.dumps({"slidesift_version": "0.1.0", "classes": ["normal", "LUAD", "LUSC"],
                    "tileset": {"tile": 200, "longest": 6000}, "device": "cpu"}),
        encoding="utf-8",
    )  # fmt: skip
    epochs = [
        {"epoch": e, "eligible": e > 1, "mean_jaccard": 0.3 + e / 10,
         "nonzero_jaccard": 0.35 + e / 10, "classification_accuracy": 0.5 + e / 20}
        for e in range(1, 5)
    ]  # fmt: skip
    (run / "selection.json").write_text(
        json.dumps({"metric": "jaccard", "best": str(run / "epoch_003.safetensors"), "epoch": 3,
                    "epochs": epochs}),
        encoding="utf-8",
    )  # fmt: skip
    return run


def _spread_rows() -> list[RailsAtSize]:
    return [
        RailsAtSize(100, Rails(2.1, 7.4, "rgb", 100, 900)),
        RailsAtSize(200, Rails(3.0, 7.2, "rgb", 200, 300)),
        RailsAtSize(400, Rails(3.9, 6.8, "rgb", 400, 40)),
        RailsAtSize(800, None),
    ]


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    out = _cohort(tmp_path)
    run = _run(tmp_path)
    spread = write_spread(tmp_path / "spread.json", _spread_rows())
    return Fixture(out, run, spread, slide_images=8)


def _section_ids(text: str) -> set[str]:
    return set(re.findall(r'<section id="([^"]+)"', text))


# --- the spread JSON -------------------------------------------------------------------------


def test_spread_json_round_trips_with_null_rails(tmp_path: Path) -> None:
    rows = _spread_rows()
    data = json.loads(spread_to_json(rows))
    assert data[-1] == {"tile": 800, "n_tiles": 0, "lo": None, "hi": None, "spread": None,
                        "entropy": None}  # fmt: skip
    assert data[0]["spread"] == pytest.approx(5.3)
    assert spread_from_json(spread_to_json(rows)) == rows
    assert read_spread(write_spread(tmp_path / "s.json", rows)) == rows
    assert spread_from_json(json.dumps({"rows": data})) == rows
    assert math.isnan(spread_from_json(spread_to_json(rows))[-1].spread)


@pytest.mark.parametrize(
    "text",
    ["not json", '{"tile": 100}', '[{"lo": 1, "hi": 2}]', '[{"tile": 100, "lo": 3, "hi": 2}]',
     '[{"tile": 100, "lo": 1}]', '[{"tile": 1.5, "lo": 1, "hi": 2}]'],
)  # fmt: skip
def test_spread_json_refuses_bad_rows(text: str) -> None:
    with pytest.raises(ConfigError, match="rails spread"):
        spread_from_json(text)


def test_rails_command_writes_the_spread(capsys, camelyon_like, tmp_path: Path) -> None:
    path = tmp_path / "spread.json"
    code = main(
        ["rails", "-s", str(camelyon_like.slide), "-t", str(camelyon_like.xml), "-N", "1024",
         "-T", "64", "--spread", "32,128,2000", "--spread-out", str(path)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = read_spread(path)
    assert [r.tile for r in rows] == [32, 64, 128, 2000]
    assert rows[-1].rails is None and all(r.rails is not None for r in rows[:3])
    assert json.loads(path.read_text())[-1]["lo"] is None


# --- the HTML --------------------------------------------------------------------------------


def test_report_has_every_section(fx: Fixture) -> None:
    text = build_report(fx.out, run=fx.run, rails_spread=fx.spread)
    assert {"summary", "metrics", "slides", "rails-spread", "training", "ablation"} <= (
        _section_ids(text)
    )
    assert "absent" not in _section_ids(text)
    # every picture is embedded: 8 slide pictures (lazy), the spread plot and the training plot
    assert text.count("<img ") == fx.slide_images + 2
    assert len(re.findall(r'src="data:image/(png|jpeg);base64,', text)) == fx.slide_images + 2
    assert text.count('loading="lazy"') == fx.slide_images
    for plot in ("training curves", "rails and spread against tile size"):  # palette PNGs
        found = re.search(rf'src="data:image/png;base64,([^"]+)" alt="{plot}"', text)
        assert found and base64.b64decode(found.group(1))[25] == 3, plot
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "no network resources"
    assert "<link" not in text and "<script src" not in text
    # the odd name is escaped everywhere
    assert ODD not in text
    assert "a&lt;b&amp;c" in text
    # the failed slide, its error, the cohort figures, the error-map legend
    assert re.search(r'<tr class="failed"[^>]*><td[^>]*>(<a [^>]*>)?gamma<', text)
    assert "SlideReadError: cannot read slide &#x27;gamma.svs&#x27;" in text
    assert ">0.656<" in text and "slide classification accuracy" in text
    assert re.search(r'<div class="card bad"><div class="value">1<', text)
    for rgb in (TP, FP, FN):
        assert "#{:02x}{:02x}{:02x}".format(*rgb) in text
    # header: version, checkpoint from selection.json, the run's path, selected epoch
    assert "slidesift 0.1.0" in text or "slidesift " in text
    assert "epoch_003.safetensors" in text
    assert f"run <code>{fx.run}</code>" in text.split("</header>")[0]
    assert "selected epoch <b>3</b>" in text
    # ablation rows and spread numbers
    assert "no rails (background only)" in text and ">0.420<" in text
    assert "<td>800</td><td>0</td><td>–</td>" in text
    # the numeric columns sort as numbers; the metrics table is the sortable one
    assert '<th scope="col" data-type="num" title="jaccard">' in text
    assert '<th scope="col" data-type="text" title="slide">' in text


def test_missing_inputs_leave_sections_out(tmp_path: Path) -> None:
    out = tmp_path / "bare"
    out.mkdir()
    (out / "scores.csv").write_text("slide,jaccard\nx,0.5\ny,\n", encoding="utf-8")
    text = build_report(out)
    ids = _section_ids(text)
    assert {"summary", "metrics", "slides", "absent"} <= ids
    assert not ids & {"rails-spread", "training", "ablation"}
    assert "<img" not in text
    assert "No summary.json" in text and "--run RUN" in text and "--spread-out" in text
    assert "--ablate" in text
    # extra columns are shown, missing ones are not invented
    assert 'title="jaccard"' in text and 'title="dice"' not in text


def test_spread_is_found_by_name_and_images_are_shrunk(fx: Fixture) -> None:
    shutil.copy(fx.spread, fx.out / "rails_spread.json")
    _png(fx.out / "alpha" / "alpha_overlay.png", 9, shape=(100, 400))
    text = build_report(fx.out, max_image_px=200)
    assert "rails-spread" in _section_ids(text) and "training" not in _section_ids(text)
    assert 'alt="overlay of alpha" width="200" height="50"' in text
    assert 'alt="error map of alpha" width="32" height="24"' in text


def test_header_names_the_run_by_its_path(fx: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(fx.run.parent)
    header = build_report("seg", run="run").split("</header>")[0]  # relative paths, as typed
    assert f"run <code>{html.escape(str(fx.run.resolve()))}</code>" in header
    assert f"cohort <code>{html.escape(str(fx.out.resolve()))}</code>" in header


def test_slide_pictures_line_up_and_legends_keep_labels_with_swatches(fx: Fixture) -> None:
    text = build_report(fx.out)
    # three columns: each slide's overlay, error map and tile locations, in that order
    assert re.search(r"\.figs\{[^}]*grid-template-columns:repeat\(3,minmax\(0,1fr\)\)", text)
    beta = re.search(r'<article class="slide" id="slide-2">(.*?)</article>', text, re.S)
    cells = re.findall(r"<figure[^>]*>.*?</figure>", beta.group(1) if beta else "")
    assert len(cells) == 3 and 'alt="overlay of beta"' in cells[0]
    assert cells[1].startswith('<figure class="absent">') and "has no truth" in cells[1]
    assert 'alt="tile locations of beta"' in cells[2]
    # a legend entry is one unbreakable unit: the swatch and its label
    assert re.search(r"\.key\{[^}]*white-space:nowrap", text)
    for label in ("prediction outline", "truth outline", "true positive", "false positive",
                  "false negative"):  # fmt: skip
        key = f'<span class="key"><span class="swatch sw-[-o0-9a-f]*"></span>{label}</span>'
        assert re.search(key, text), label


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """2 slides of H&E-like pictures over MAX_IMAGE_PX as segment writes them; p0's overlay."""
    out = tmp_path_factory.mktemp("photos")
    rows, overlays = [], []
    for i, shape in enumerate(((1600, 1300), (1250, 1600))):
        pixels, truth = he_like_image(shape, seed=11 + i)
        mask = np.roll(truth, 30, axis=1)  # a prediction a little off the truth
        tiles = cv2.resize(pixels.min(axis=2), None, fx=0.01, fy=0.01) < 200
        kept = cv2.resize(tiles.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST)
        overlays.append(overlay(pixels, mask, truth))
        write_png(out / f"p{i}_overlay.png", overlays[-1])
        write_png(out / f"p{i}_errors.png", error_map(pixels, mask, truth))
        write_png(out / f"p{i}_locations.png", location_map_image(pixels, kept > 0))
        rows.append(f"p{i},LUAD,LUAD,0.7,0.8,0.8,0.8,0,100,dense,ok,")
    (out / "scores.csv").write_text(COLUMNS + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return out, overlays[0]


def _embedded(text: str, alt: str) -> tuple[str, np.ndarray]:
    """The MIME subtype and RGB pixels of the picture with this alt text."""
    found = re.search(rf'src="data:image/(\w+);base64,([^"]+)" alt="{re.escape(alt)}"', text)
    assert found, alt
    data = np.frombuffer(base64.b64decode(found.group(2)), np.uint8)
    return found.group(1), cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def test_photographs_are_small_and_legible(photos: tuple[Path, np.ndarray]) -> None:
    """Near 1 MB a slide; before: 1200-px PNGs, over 4 MB a slide (19 MB for 8 slides)."""
    out, source = photos
    text = build_report(out)
    assert len(text.encode("utf-8")) / 2 < 1_000_000
    assert re.findall(r'src="data:image/(\w+);base64,', text) == ["jpeg"] * 3 * 2
    kind, shown = _embedded(text, "overlay of p0")
    h, w = shown.shape[:2]
    assert kind == "jpeg" and max(h, w) == MAX_IMAGE_PX
    ref = cv2.resize(source, (w, h), interpolation=cv2.INTER_AREA).astype(int)
    err = np.abs(shown.astype(int) - ref)
    outline = np.abs(ref - np.array(OUTLINE)).sum(axis=2) < 30
    assert outline.sum() > 2000 and err.mean() < 4
    # the thin cyan outline keeps its colour (chroma subsampling would smear it: about 22)
    assert err[outline].mean() < 7


def test_flat_pictures_stay_lossless_png(tmp_path: Path) -> None:
    (tmp_path / "scores.csv").write_text("slide\nm\n", encoding="utf-8")
    img = np.full((1600, 1200, 3), 255, np.uint8)
    img[300:900, 200:700] = FP
    write_png(tmp_path / "m_overlay.png", img)
    kind, shown = _embedded(build_report(tmp_path), "overlay of m")
    assert kind == "png"
    assert np.array_equal(shown, cv2.resize(img, (900, 1200), interpolation=cv2.INTER_AREA))


def _coinciding_run(root: Path) -> Path:
    """A run whose accuracies are all equal, and so are its selection figures."""
    (run := root / "same").mkdir()
    rows = [",".join(LOG_COLUMNS)] + [
        f"{e},{1 / e:.4f},{a},{a},{a},900,40,{1 / e:.4f},{a},{a},12.5,800"
        for e, a in ((e, f"{0.5 + e / 10:.3f}") for e in range(1, 5))
    ]
    (run / "log.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    epochs = [{"epoch": e, "mean_jaccard": e / 10, "nonzero_jaccard": e / 10,
               "classification_accuracy": e / 10} for e in range(1, 5)]  # fmt: skip
    selection = {"metric": "jaccard", "epoch": 2, "epochs": epochs}
    (run / "selection.json").write_text(json.dumps(selection), encoding="utf-8")
    return run


def test_coinciding_curves_all_stay_visible(tmp_path: Path) -> None:
    fig = training_figure(read_run(_coinciding_run(tmp_path)))
    for ax in fig.axes:
        ax.get_legend().remove()  # it shows every colour anyway
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[::-1, :, :3].astype(int)  # row 0: the bottom
    hidden, curves = [], 0
    for ax in fig.axes:
        x0, y0, x1, y1 = (int(v) for v in ax.get_window_extent().extents)
        for line in ax.get_lines():  # the curves: labelled, not the selected epoch's line
            if not line.get_label().startswith(("_", "selected")):
                rgb = [int(line.get_color()[k : k + 2], 16) for k in (1, 3, 5)]
                seen = (np.abs(pixels[y0:y1, x0:x1] - rgb).sum(axis=2) < 40).sum()
                hidden += [] if seen > 150 else [f"{line.get_label()}: {seen} px"]
                curves += 1
    assert curves == 2 + 4 + 3 and hidden == []


def test_write_report_is_atomic_and_defaults_into_the_cohort(fx: Fixture) -> None:
    path = write_report(fx.out)
    assert path == fx.out / "report.html"
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not list(fx.out.glob(".report.html.*"))
    with pytest.raises(ReportError, match="does not exist"):
        write_report(fx.out, fx.out / "no" / "r.html")


def test_cli_report(capsys, fx: Fixture, tmp_path: Path) -> None:
    dest = tmp_path / "r.html"
    code = main(["report", str(fx.out), "--run", str(fx.run), "--rails-spread", str(fx.spread),
                 "--output", str(dest), "--title", "LUAD vs LUSC"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip().endswith(str(dest)) and dest.is_file()
    assert "<title>LUAD vs LUSC</title>" in dest.read_text(encoding="utf-8")
    code = main(["report", "--help"])
    out, _ = capsys.readouterr()
    assert code == 0 and "Example" in out and "slidesift report seg --run run" in out
    code = main(["report", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 4 and "has no scores.csv" in err


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("scores.csv", "slide,jaccard\na,0.5,extra\n", "line 2 has 3 fields"),
        ("scores.csv", "name,jaccard\na,0.5\n", "no 'slide' column"),
        ("scores.csv", "", "is empty"),
        ("scores.csv", "slide,jaccard\n,0.5\n", "blank slide name"),
        ("summary.json", "{not json", "is not valid JSON"),
        ("summary.json", "[1, 2]", "not a JSON object"),
        ("ablation.json", '{"condition": "rails"}', "not a JSON array of objects"),
    ],
)
def test_malformed_cohort_is_a_clear_error(fx: Fixture, name: str, content: str,
                                           message: str) -> None:  # fmt: skip
    _write(fx.out / name, content)
    with pytest.raises(ReportError, match=re.escape(message)) as info:
        build_report(fx.out)
    assert name in str(info.value)


def test_other_bad_inputs_are_clear_errors(fx: Fixture, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"has no scores\.csv"):
        read_cohort(tmp_path / "run")
    with pytest.raises(ReportError, match="is not a folder"):
        build_report(tmp_path / "nowhere")
    bad = _write(tmp_path / "bad_spread.json", '[{"tile": 100, "lo": 9, "hi": 1}]')
    with pytest.raises(ReportError, match="is not a rails spread"):
        build_report(fx.out, rails_spread=bad)
    _write(fx.run / "log.csv", "epoch,train_loss\n1,oops\n")
    with pytest.raises(ReportError, match="'oops' in column 'train_loss'"):
        build_report(fx.out, run=fx.run)
    with pytest.raises(ReportError, match="not a training run folder"):
        build_report(fx.out, run=fx.out / "alpha")


# --- in a real browser -----------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


#: Legend labels not on the line of their swatch, right beside it.
LABELS_APART = """() => Array.from(document.querySelectorAll(".swatch")).flatMap(swatch => {
  const label = swatch.nextSibling, s = swatch.getBoundingClientRect(), r = new Range();
  if (!label || label.nodeType !== Node.TEXT_NODE) { return ["a swatch without a label"]; }
  r.selectNodeContents(label);
  const lines = Array.from(r.getClientRects()).filter(b => b.width > 0), t = lines[0];
  return lines.length === 1 && t.top < s.bottom && s.top < t.bottom && t.left >= s.right - 1
    && t.left - s.right < 16 ? [] : [label.textContent];
})"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); .ci/run installs it")
    return path


@pytest.mark.slow
def test_report_renders_in_chromium(fx: Fixture, tmp_path: Path) -> None:
    chromium = _chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'"
    )
    from PIL import Image

    path = write_report(fx.out, run=fx.run, rails_spread=fx.spread)
    problems: list[str] = []
    shot = tmp_path / "report.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:"))
                    else problems.append(f"network request {r.url}"))  # fmt: skip
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")

            def slides() -> list[str]:
                return list(page.eval_on_selector_all(
                    "#metrics-table tbody tr", "rows => rows.map(r => r.cells[0].textContent)"
                ))  # fmt: skip

            before = slides()
            assert before == ["alpha", "beta", ODD, "gamma"]
            page.click("#metrics-table th[title=jaccard] button")
            assert slides() == [ODD, "alpha", "beta", "gamma"]  # numbers up, blanks last
            page.click("#metrics-table th[title=jaccard] button")
            assert slides() == ["alpha", ODD, "beta", "gamma"]  # reversed, blanks still last
            page.click("#metrics-table th[title=slide] button")
            assert slides() == [ODD, "alpha", "beta", "gamma"]
            # every (lazy) picture decodes once scrolled to
            page.evaluate("() => Array.from(document.images).forEach(i => i.scrollIntoView())")
            page.wait_for_function(
                "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
                timeout=10_000,
            )
            page.evaluate("() => window.scrollTo(0, 0)")
            page.screenshot(path=str(shot), full_page=True)
            # a slide's three pictures share the page's width, even on a wide screen
            page.set_viewport_size({"width": 1920, "height": 1000})
            boxes = page.eval_on_selector_all(
                "#slide-1 .figs img", "imgs => imgs.map(i => i.getBoundingClientRect().toJSON())"
            )
            assert len(boxes) == 3
            assert boxes[-1]["right"] - boxes[0]["left"] > 0.9 * 1920, boxes
            assert min(b["width"] for b in boxes) > 0.28 * 1920, boxes
            # every legend label stays beside its swatch, whatever the width
            for width in range(340, 1300, 20):
                page.set_viewport_size({"width": width, "height": 900})
                assert page.evaluate(LABELS_APART) == [], f"at {width} px"
        finally:
            browser.close()
    assert problems == []
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] > 900 and pixels.std() > 20
    packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)
    assert len(np.unique(packed)) > 50  # distinct colours: text, tables, plots, pictures
