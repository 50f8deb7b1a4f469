"""The U-Net baseline (``slidesift.unet_model``): the paper's Keras network, rebuilt in torch.

Independent anchors, none derived from the module itself:

* parameter counts: the encoder's 4,007,548 is torchvision's published efficientnet_b0 figure
  (5,288,548) less its 1,280 x 1,000 + 1,000 classifier; the whole net's 10,071,501 trainable
  and 10,115,501 with BatchNorm statistics were derived by hand from the Keras layer list;
* torchvision's layout: the digest of ``efficientnet_b0().features.state_dict()``'s key names
  and shapes, and the encoder's outputs for deterministic weights (:func:`fill`), both taken
  from torchvision 0.28 once (torchvision is no dependency, so the figures are written here).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch
from safetensors.torch import save_file
from torch import nn

from slidesift.errors import CheckpointError, ConfigError
from slidesift.unet_model import (
    ARCHITECTURE,
    EfficientNetB0Encoder,
    UnetEffB0,
    count_parameters,
    load_encoder_weights,
)

pytestmark = pytest.mark.learn

#: sha256 of "KEY (SHAPE)" lines of torchvision 0.28's efficientnet_b0().features.state_dict().
TORCHVISION_KEYS = "cc6e0c7128ee1ec5d18b3840631f44f25c706df732a7e6f38b20cb1c8496642b"
#: torchvision's features(normalised x) and its four skip activations for the weights of
#: fill() and x = torch.rand(1, 3, 64, 64, seed 0): shape, every (numel // 6)-th value (first
#: six), mean |value|.
TORCHVISION_OUTPUTS = [
    ((1, 1280, 2, 2), [-0.13201, -0.00136, 0.04496, 0.00298, 0.0275, 0.03223], 0.105032),
    ((1, 672, 4, 4), [-0.25646, 0.33426, -0.13137, -0.1353, -0.11884, -0.03478], 0.171076),
    ((1, 240, 8, 8), [-0.01703, 0.49802, -0.15168, -0.15042, 0.43238, 0.29387], 0.203532),
    ((1, 144, 16, 16), [0.02673, -0.17403, 0.29614, 0.31884, 0.11235, 0.00165], 0.249758),
    ((1, 96, 32, 32), [-0.0825, -0.20823, -0.08649, 0.33358, -0.19002, -0.24406], 0.34151),
]


def fill(module: nn.Module) -> None:
    """Deterministic, well-scaled values for every tensor of ``module``'s state (key order)."""
    new = {}
    for i, (k, v) in enumerate(module.state_dict().items()):
        r = torch.randn(v.shape, generator=torch.Generator().manual_seed(i))
        if k.endswith("num_batches_tracked"):
            new[k] = v
        elif k.endswith("running_var"):
            new[k] = 1.0 + 0.1 * r.abs()
        elif k.endswith(("running_mean", "bias")):
            new[k] = 0.1 * r
        elif v.ndim == 4:
            new[k] = r * (2.0 / v[0].numel()) ** 0.5
        else:
            new[k] = 1.0 + 0.1 * r
    module.load_state_dict(new, strict=True)


@pytest.fixture(scope="module")
def net() -> UnetEffB0:
    torch.manual_seed(0)
    return UnetEffB0().eval()


def test_parameter_counts_match_torchvision_and_keras(net: UnetEffB0) -> None:
    assert ARCHITECTURE == "unet-effb0"
    assert len(net.encoder.features) == 9
    assert count_parameters(net.encoder.features)["trainable"] == 5_288_548 - 1_281_000
    counts = count_parameters(net)
    assert counts["trainable"] == 10_071_501
    assert counts["with_bn_statistics"] == 10_115_501
    assert counts["layers"] == 263  # our leaf-module count; Keras says 271 layers
    assert count_parameters(UnetEffB0(n_out=3))["trainable"] == 10_071_501 + 2 * (16 * 9 + 1)
    frozen = UnetEffB0()
    frozen.encoder.requires_grad_(False)
    assert count_parameters(frozen)["trainable"] == 10_071_501 - 4_007_548


def test_encoder_has_torchvision_names_and_shapes(net: UnetEffB0) -> None:
    state = net.encoder.features.state_dict()
    text = "\n".join(f"{k} {tuple(v.shape)}" for k, v in state.items())
    assert len(state) == 358
    for key in ("0.0.weight", "1.0.block.1.fc1.bias", "2.0.block.0.0.weight", "8.1.running_var"):
        assert key in state
    assert hashlib.sha256(text.encode()).hexdigest() == TORCHVISION_KEYS
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in bns} == {(1e-5, 0.1)}  # torch's defaults, as torchvision


def test_encoder_computes_what_torchvision_computes() -> None:
    net = UnetEffB0().eval()
    fill(net.encoder.features)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = net.features(x)
    assert len(outputs) == len(TORCHVISION_OUTPUTS)
    for got, (shape, values, mean_abs) in zip(outputs, TORCHVISION_OUTPUTS, strict=True):
        assert tuple(got.shape) == shape
        flat = got.flatten()
        sample = flat[:: flat.numel() // 6][:6]
        torch.testing.assert_close(sample, torch.tensor(values), atol=2e-4, rtol=1e-3)
        assert got.abs().mean().item() == pytest.approx(mean_abs, rel=1e-4)


@pytest.mark.parametrize("side", [224, 256])
def test_output_has_the_input_side(net: UnetEffB0, side: int) -> None:
    with torch.no_grad():
        out = net(torch.rand(2, 3, side, side))
    assert out.shape == (2, 1, side, side)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


def test_skips_are_the_keras_expand_activations(net: UnetEffB0) -> None:
    with torch.no_grad():
        got = [tuple(t.shape) for t in net.features(torch.rand(2, 3, 256, 320))]
    assert got == [(2, 1280, 8, 10), (2, 672, 16, 20), (2, 240, 32, 40), (2, 144, 64, 80),
                   (2, 96, 128, 160)]  # fmt: skip
    # taken after the expand's SiLU: the first blocks of stages 2, 3, 4 and 6 expand
    for i in (2, 3, 4, 6):
        assert isinstance(net.encoder.features[i][0].block[0][2], nn.SiLU)


def test_every_skip_reaches_the_output() -> None:
    torch.manual_seed(0)
    net = UnetEffB0().eval()
    fill(net.encoder.features)  # at init, eval-mode features fade to ~1e-13 at the bottom
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = net(x)
        for i in range(5):  # 0: the bottom, 1-4: the skips, deepest first

            def zero(_m: nn.Module, _x: object, out: list[torch.Tensor], i: int = i) -> list:
                return [torch.zeros_like(t) if j == i else t for j, t in enumerate(out)]

            hook = net.encoder.register_forward_hook(zero)
            try:
                change = (net(x) - plain).abs().max() / plain.abs().max()
                assert change > 1e-3, f"feature {i} is unused"
            finally:
                hook.remove()


def test_eval_is_deterministic_and_training_drops_paths(net: UnetEffB0) -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    encoder = EfficientNetB0Encoder().train()
    p = [blk.stochastic_depth.p for stage in encoder.features[1:8] for blk in stage]
    assert p == pytest.approx([0.2 * i / 16 for i in range(16)])
    runs = []
    with torch.no_grad():
        for seed in (0, 0, *range(1, 8)):
            torch.manual_seed(seed)
            runs.append(encoder(x)[0])
    assert torch.equal(runs[0], runs[1])  # batch statistics are deterministic
    assert not all(torch.equal(runs[0], r) for r in runs[2:])  # only stochastic depth differs


@pytest.mark.parametrize("shape", [(1, 3, 250, 256), (1, 3, 256, 250), (1, 4, 256, 256)])
def test_bad_sides_are_refused_before_running(net: UnetEffB0, shape: tuple[int, ...]) -> None:
    ran = []
    hook = net.encoder.features[0].register_forward_hook(lambda *_: ran.append(1))
    try:
        with pytest.raises(ConfigError, match=r"32|RGB"):
            net(torch.rand(*shape))
    finally:
        hook.remove()
    assert ran == []


def test_decoder_upsamples_nearest_and_gradients_reach_the_stem() -> None:
    net = UnetEffB0().train()
    up = net.decoder[0].upsample
    x = torch.arange(6.0).view(1, 1, 2, 3)
    assert torch.equal(up(x), x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    assert not any(name in dict(net.named_parameters()) for name in ("mean", "std"))
    net(torch.rand(2, 3, 64, 64)).mean().backward()
    grad = net.encoder.features[0][0].weight.grad
    assert grad is not None and bool(grad.abs().sum() > 0)


def test_state_dict_round_trips_through_safetensors(net: UnetEffB0, tmp_path: Path) -> None:
    path = tmp_path / "unet.safetensors"
    save_file(net.state_dict(), str(path))
    from safetensors.torch import load_file

    other = UnetEffB0()
    other.load_state_dict(load_file(str(path)), strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(other.eval()(x), net(x))


def _encoder_state(prefix: str) -> dict[str, torch.Tensor]:
    source = EfficientNetB0Encoder()
    fill(source.features)
    return {prefix + k: v.clone() for k, v in source.features.state_dict().items()}


@pytest.mark.parametrize("prefix", ["", "features.", "encoder.features."])
def test_encoder_weights_load_in_any_of_the_three_namings(prefix: str, tmp_path: Path) -> None:
    state = _encoder_state(prefix)
    if prefix == "features.":  # a whole torchvision model: the classifier is ignored
        state["classifier.1.weight"] = torch.zeros(1000, 1280)
        state["classifier.1.bias"] = torch.zeros(1000)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    net = UnetEffB0()
    decoder = {k: v.clone() for k, v in net.decoder.state_dict().items()}
    load_encoder_weights(net, path)
    loaded = net.encoder.features.state_dict()
    assert all(torch.equal(loaded[k.removeprefix(prefix)], v) for k, v in state.items()
               if not k.startswith("classifier."))  # fmt: skip
    assert all(torch.equal(net.decoder.state_dict()[k], v) for k, v in decoder.items())


@pytest.mark.parametrize(
    "damage, words",
    [
        ("drop", "missing: features.8.1.running_var"),
        ("extra", "unexpected tensor(s): 9.weight"),
        ("shape", "another shape: features.1.0.block.1.fc1.weight (4, 32, 1, 1)"),
        ("decoder", "unexpected tensor(s): decoder.0.conv1.0.weight"),
    ],
)
def test_wrong_encoder_weights_are_refused(damage: str, words: str, tmp_path: Path) -> None:
    state = _encoder_state("")
    if damage == "drop":
        del state["8.1.running_var"]
    elif damage == "extra":
        state["9.weight"] = torch.zeros(3)
    elif damage == "shape":  # the squeeze width from the expanded channels, not C_in // 4
        state["1.0.block.1.fc1.weight"] = torch.zeros(4, 32, 1, 1)
    else:
        state["decoder.0.conv1.0.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    net = UnetEffB0()
    before = net.encoder.features[0][0].weight.clone()
    with pytest.raises(CheckpointError) as err:
        load_encoder_weights(net, path)
    message = str(err.value)
    assert words in message and str(path) in message
    assert "efficientnet_b0(weights='IMAGENET1K_V1')" in message
    assert torch.equal(net.encoder.features[0][0].weight, before)  # nothing half-loaded


def test_a_file_that_is_no_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "effb0.pth"
    path.write_bytes(b"PK\x03\x04" + bytes(100))  # a torch.save zip: never unpickled
    with pytest.raises(CheckpointError, match="IMAGENET1K_V1"):
        load_encoder_weights(UnetEffB0(), path)
