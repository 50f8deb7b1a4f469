"""Value types validate once, where they are made: Downsample, GridSpec and every *Spec."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from slidesift.cli.main import main
from slidesift.errors import ConfigError
from slidesift.io.downsample import DEFAULT_LONGEST, Downsample
from slidesift.segment import SegmentSpec
from slidesift.tiles import GridSpec, TileGrid
from slidesift.train_spec import TrainSpec


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"longest": 100, "mpp": 2.0}, {"longest": 0}, {"longest": -5}, {"longest": 1.5},
     {"longest": True}, {"mpp": 0.0}, {"mpp": -1.0}, {"mpp": math.nan}, {"mpp": math.inf}],
)  # fmt: skip
def test_downsample_refuses_what_is_not_one_positive_target(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Downsample(**kwargs)


def test_downsample_reads_one_way_everywhere() -> None:
    assert Downsample.of() == Downsample(longest=DEFAULT_LONGEST)
    assert Downsample.of(mpp=2) == Downsample(mpp=2.0)
    with pytest.raises(ConfigError, match="exactly one"):
        Downsample.of(1500, 2.0)  # -N 1500 --mpp 2: ambiguous, not "mpp wins"
    for d in (Downsample(longest=1500), Downsample(mpp=0.7)):
        assert Downsample.from_dict(d.to_dict()) == d
    # a checkpoint's meta holds both keys, one of them null
    assert Downsample.from_dict({"longest": None, "mpp": 4.0}) == Downsample(mpp=4.0)
    assert Downsample.from_dict({"longest": 800, "mpp": None}) == Downsample(longest=800)


def test_downsample_target_size_never_upsamples() -> None:
    assert Downsample(longest=1000).target_size((4000, 3000), None) == (1000, 750)
    assert Downsample(longest=9000).target_size((4000, 3000), None) == (4000, 3000)
    assert Downsample(mpp=2.0).target_size((4000, 3000), 0.5) == (1000, 750)
    assert Downsample(mpp=0.25).target_size((4000, 3000), 0.5) == (4000, 3000)
    with pytest.raises(ConfigError, match="no MPP"):
        Downsample(mpp=2.0).target_size((4000, 3000), None, "x.svs")


@pytest.mark.parametrize(
    "kwargs",
    [{"tile": 0}, {"tile": -1}, {"tile": 9.5}, {"tile": True}, {"overlap": 1.0},
     {"overlap": -0.1}, {"stride": 0}, {"stride": 2.5}, {"stride": False}],
)  # fmt: skip
def test_grid_spec_refuses_bad_geometry(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        GridSpec(**kwargs)


def test_grid_spec_lays_the_same_grid_as_tile_grid() -> None:
    shape = (517, 903)
    assert GridSpec(96, 0.8).over(shape) == TileGrid.from_overlap(shape, tile=96, overlap=0.8)
    assert GridSpec(96, 0.8, stride=40).over(shape) == TileGrid.from_stride(
        shape, tile=96, stride=40
    )
    assert GridSpec(96, 0.5).to_dict() == {"tile": 96, "overlap": 0.5}
    assert GridSpec(96, stride=40).to_dict() == {"tile": 96, "stride": 40}


@pytest.mark.parametrize(
    "kwargs",
    [{"inference": "foo"}, {"mode": "max"}, {"threshold": 1.5}, {"threshold": -0.1},
     {"smooth": -1}, {"smooth": 2.5}, {"shrink": 1.0}, {"shrink": -0.1}, {"batch": 0},
     {"stride": 0}, {"overlap": 1.0}],
)  # fmt: skip
def test_segment_spec_refuses_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        SegmentSpec(**kwargs)
    assert info.value.name in kwargs or next(iter(kwargs)) in str(info.value)


def test_segment_spec_defaults_are_valid() -> None:
    spec = SegmentSpec()
    assert spec.inference == "auto" and spec.stride_for(400) == 80


@pytest.mark.parametrize("mode", ["auto", "dense", "int8", "bf16", "tiles", "torch"])
def test_segment_spec_takes_every_inference_mode(mode: str) -> None:
    assert SegmentSpec(inference=mode).inference == mode  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["INT8", "fp16", "int4", "bfloat16", "", None, 8])
def test_segment_spec_refuses_other_precisions_and_says_which_exist(mode: Any) -> None:
    with pytest.raises(ConfigError, match="inference") as info:
        SegmentSpec(inference=mode)
    assert "'int8'" in str(info.value) and "'bf16'" in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"device": "tpu"}, {"workers": -1},
     {"eval_batch": 0}],
)  # fmt: skip
def test_train_spec_refuses_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TrainSpec(**kwargs)


def test_train_refuses_both_n_and_mpp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("slide,annotation,label,split\n", encoding="utf-8")
    code = main(["train", str(manifest), "--out", str(tmp_path / "run"), "-N", "1500",
                 "--mpp", "2"])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2 and "not both" in err
    assert not (tmp_path / "run").exists()


_BLOCK = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # import name -> ImportError, as when the extra is not installed
from slidesift.errors import MissingExtraError
try:
{call}
except MissingExtraError as exc:
    print("MISSING", exc.module, exc.extra)
    print(exc)
"""


MISSING_EXTRA_CASES = [
    (["torch"], "    from slidesift.model import LightweightCNN", "torch", "learn"),
    (["torch"], "    from slidesift.train import train; train(None, 'x')", "torch", "learn"),
    (["torch"], "    import slidesift; slidesift.LightweightCNN", "torch", "learn"),
    (["torch"], "    from slidesift.torch_inference import TorchTiles; TorchTiles(None)",
     "torch", "learn"),
    (["onnxruntime"], "    from slidesift.inference import _ort; _ort()", "onnxruntime", "infer"),
    (["distributed"], "    from slidesift.cohort import _distributed; _distributed()",
     "distributed", "cohort"),
]  # fmt: skip


@pytest.mark.parametrize(("blocked", "call", "module", "extra"), MISSING_EXTRA_CASES)
def test_a_missing_extra_names_the_pip_extra(
    blocked: list[str], call: str, module: str, extra: str
) -> None:
    import subprocess
    import sys

    code = _BLOCK.format(blocked=blocked, call=call)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"MISSING {module} {extra}" in done.stdout
    assert f"pip install 'slidesift[{extra}]'" in done.stdout
