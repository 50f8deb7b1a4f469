"""TOML config (defaults for every command, flags win) and ``slidesift doctor``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from slidesift.cli import doctor_cmd
from slidesift.cli.config import default_map, read_config
from slidesift.cli.main import cli, main
from slidesift.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "slidesift.toml"
    path.write_text(text)
    return path


def test_top_level_keys_reach_every_command_that_has_them(tmp_path: Path) -> None:
    cfg = read_config(_write(tmp_path, "longest = 1500\ntile = 96\n[train]\nepochs = 3\n"))
    dm = default_map(cli, cfg)
    assert dm["train"] == {"longest": 1500, "tile": 96, "epochs": 3}
    assert dm["rails"]["longest"] == 1500 and dm["sift"]["tile"] == 96
    assert "phantom" not in dm  # phantom has neither option


def test_command_table_wins_and_both_spellings_work(tmp_path: Path) -> None:
    text = (
        "smooth = 10\n[segment]\nsmooth = 25\nround-stride = true\n[select]\nround_stride = true\n"
    )
    dm = default_map(cli, read_config(_write(tmp_path, text)))
    assert dm["segment"] == {"smooth": 25, "round_stride": True}
    assert dm["select"] == {"smooth": 10, "round_stride": True}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[trian]\nepochs = 3\n", "[trian]"),
        ("[train]\nepoch = 3\n", "'epoch'"),
        ("tiel = 96\n", "'tiel'"),
        ("[train\nepochs = 3\n", "valid TOML"),
    ],
)
def test_typos_and_bad_toml_are_named(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        default_map(cli, read_config(_write(tmp_path, text)))
    assert fragment in str(info.value)


def test_config_sets_defaults_and_flags_override(tmp_path: Path) -> None:
    cfg = _write(tmp_path, '[phantom]\ncount = 2\nsize = "600-700"\nartifacts = "none"\n')
    assert main(["--config", str(cfg), "phantom", "--out", str(tmp_path / "a")]) == 0
    with (tmp_path / "a" / "manifest.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 2
    argv = ["--config", str(cfg), "phantom", "--out", str(tmp_path / "b"), "--count", "3"]
    assert main(argv) == 0
    with (tmp_path / "b" / "manifest.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3


def test_bad_config_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path, "[phantom]\ncuont = 2\n")
    assert main(["--config", str(cfg), "phantom", "--out", str(tmp_path / "x")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cuont" in err and "count" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.learn
def test_doctor_reports_versions_gpu_and_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime
    import openslide
    import torch

    monkeypatch.setenv("SLIDESIFT_CACHE", str(tmp_path / "cache"))
    assert main(["doctor"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert openslide.__library_version__ in out
    assert torch.__version__ in out and onnxruntime.__version__ in out
    assert ("CUDA" in out) == torch.cuda.is_available()
    cache = next(c for c in doctor_cmd.checks() if c.component == "thumbnail cache")
    assert cache.found.startswith(str(tmp_path / "cache")) and cache.ok


def test_doctor_exits_1_when_openslide_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = doctor_cmd.Check("OpenSlide", "missing (test)", False, "reading slides", True)
    monkeypatch.setattr(doctor_cmd, "_openslide", lambda: missing)
    assert main(["doctor"]) == 1
    assert "OpenSlide missing" in " ".join(capsys.readouterr().err.split())


def test_doctor_prints_the_pip_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pip install 'slidesift[cohort]'`` reaches the table whole (rich once took ``[cohort]``
    for markup and printed ``pip install 'slidesift'``)."""
    real = doctor_cmd.checks

    def without_dask() -> list[doctor_cmd.Check]:
        return [
            doctor_cmd.Check("Dask", "missing: pip install 'slidesift[cohort]'", False, "cohorts")
            if c.component == "Dask"
            else c
            for c in real()
        ]

    monkeypatch.setattr(doctor_cmd, "checks", without_dask)
    main(["doctor"])
    assert "pip install 'slidesift[cohort]'" in capsys.readouterr().out
