"""The cohort manifest: one format, validated with every problem and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from slidesift.cli.main import main
from slidesift.manifest import ManifestEntry, ManifestError, read_manifest, write_manifest


def cohort_dir(tmp_path: Path) -> Path:
    for rel in ("slides/a.svs", "slides/b.tif", "slides/c.tif", "masks/a_mask.tif", "xml/b.xml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    return tmp_path


def test_a_valid_manifest_resolves_paths_and_keeps_extra_columns(tmp_path: Path) -> None:
    root = cohort_dir(tmp_path)
    (root / "m.csv").write_text(
        "\ufeffslide,annotation,label,split,patient\n"  # Excel's BOM is fine
        "slides/a.svs,masks/a_mask.tif,MSI-H,train,p1\n"
        " slides/b.tif , xml/b.xml ,tumor,test,p2\n"
        "slides/c.tif,,normal,,p3\n"
        ",,,,\n",  # blank rows are skipped
        encoding="utf-8",
    )
    m = read_manifest(root / "m.csv")
    assert [e.name for e in m] == ["a", "b", "c"]
    a, b, c = m.entries
    assert a.slide == (root / "slides/a.svs").resolve() and a.annotation is not None
    assert b.annotation == (root / "xml/b.xml").resolve() and b.split == "test"
    assert c.annotation is None and c.is_normal and c.has_truth and c.split is None
    assert a.extra == {"patient": "p1"} and a.line == 2
    assert m.labels == ["MSI-H", "tumor", "normal"]
    assert [e.name for e in m.split("train")] == ["a"]


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    root = cohort_dir(tmp_path)
    (root / "m.csv").write_text(
        "slide,annotation,label,split\n"
        "slides/a.svs,masks/a_mask.tif,MSI-H,training\n"
        "slides/missing.svs,,MSI-L,train\n"
        "slides/a.svs,,MSI-L,test\n"
        "slides/b.tif,xml/b.txt,tumor,test\n"
        "slides/c.tif,xml/none.xml,tumor,test\n"
        ",masks/a_mask.tif,,\n"
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(root / "m.csv")
    lines = [line for line, _ in err.value.problems]
    assert lines == [2, 3, 4, 5, 6, 7]
    text = str(err.value)
    for needle in (
        "'training' is not one of train, val, test",
        "missing.svs' not found",
        "already on line 2",
        "unknown type",
        "none.xml' not found",
        "empty 'slide'",
    ):
        assert needle in text  # fmt: skip
    assert err.value.exit_code == 4


@pytest.mark.parametrize(
    ("content", "needle"),
    [("path,label\nx.svs,a\n", "no 'slide' column"), ("slide,annotation\n", "no slides"),
     ("slide,label\na.svs,x,extra\n", "more fields")],
)  # fmt: skip
def test_malformed_manifests(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(ManifestError, match=needle):
        read_manifest(tmp_path / "m.csv")


def test_missing_and_binary_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="file not found"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81slide")
    with pytest.raises(ManifestError, match="UTF-8"):
        read_manifest(tmp_path / "bin.csv")


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    root = cohort_dir(tmp_path)
    entries = [
        ManifestEntry(root / "slides/a.svs", root / "masks/a_mask.tif", "MSI-H", "train",
                      {"patient": "p,1"}),
        ManifestEntry(root / "slides/c.tif", None, "normal", None, {}),
    ]  # fmt: skip
    path = write_manifest(root / "m.csv", entries)
    assert path.read_text().splitlines()[1] == 'slides/a.svs,masks/a_mask.tif,MSI-H,train,"p,1"'
    back = read_manifest(path)
    assert [(e.slide, e.annotation, e.label, e.split) for e in back] == [
        (e.slide.resolve(), e.annotation.resolve() if e.annotation else None, e.label, e.split)
        for e in entries
    ]
    assert back.entries[0].extra == {"patient": "p,1"}


def test_cli_phantom_writes_a_cohort_and_refuses_bad_options(tmp_path: Path) -> None:
    out = tmp_path / "co"
    args = ["phantom", "--out", str(out), "--count", "2", "--size", "700-800", "--mpp", "4"]
    assert main(args) == 0
    m = read_manifest(out / "manifest.csv")
    assert len(m) == 2 and all(e.slide.exists() for e in m)
    assert main([*args[:-2], "--mpp", "3"]) == 2  # other spec, same folder: ConfigError
    assert main(["phantom", "--out", str(tmp_path / "x"), "--size", "big"]) == 2
    assert main(["phantom", "--out", str(tmp_path / "x"), "--artifacts", "coffee"]) == 2


def test_cli_phantom_defaults_are_the_cohort_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from slidesift.phantom.cohort import CohortSpec

    assert main(["phantom", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    lo, hi = CohortSpec.longest
    assert f"[default: {lo}-{hi}]" in text
    assert f"[default: {CohortSpec.count}]" in text and f"[default: {CohortSpec.mpp}]" in text
