"""The paper's baseline segmenter: a U-Net with an EfficientNet-B0 encoder, in plain torch.

Frank (2022) built it with Keras ``segmentation_models``: ``Unet('efficientnetb0', classes=1,
activation='sigmoid')``, rebuilt here layer for layer without torchvision, timm or smp.

Input ``(B, 3, H, W)`` float32 RGB in ``[0, 1]``, H and W multiples of 32 (else
:class:`~slidesift.errors.ConfigError`). The network scales it with the ImageNet mean and std
itself (constant buffers, not parameters), the scaling ``segmentation_models`` applies to
EfficientNet input. Output ``(B, n_out, H, W)`` logits; the sigmoid is applied outside.

Encoder (``net.encoder.features``, torchvision's module names and order, so that
``torchvision.models.efficientnet_b0().features.state_dict()`` loads with ``strict=True``):

==========  =====================================================  ========  =====
module      content                                                out ch    side
==========  =====================================================  ========  =====
features.0  Conv 3x3 s2 -> BN -> SiLU                              32        H/2
features.1  1 MBConv, expand 1, k3                                 16        H/2
features.2  2 MBConv, expand 6, k3, first s2                       24        H/4
features.3  2 MBConv, expand 6, k5, first s2                       40        H/8
features.4  3 MBConv, expand 6, k3, first s2                       80        H/16
features.5  3 MBConv, expand 6, k5                                 112       H/16
features.6  4 MBConv, expand 6, k5, first s2                       192       H/32
features.7  1 MBConv, expand 6, k3                                 320       H/32
features.8  Conv 1x1 -> BN -> SiLU                                 1280      H/32
==========  =====================================================  ========  =====

MBConv ``block``: [expand 1x1 -> BN -> SiLU] -> depthwise kxk -> BN -> SiLU -> squeeze-excitation
(``fc1`` to max(1, C_in // 4) -> SiLU -> ``fc2`` -> sigmoid scale) -> project 1x1 -> BN; residual
when stride 1 and C_in == C_out, with stochastic depth (row mode, 0.2 * i / 16 for block i) in
training. BatchNorm: torch's eps 1e-5 and momentum 0.1, as torchvision's efficientnet_b0.

Skips, as ``segmentation_models`` takes them for ``efficientnetb0``: the expand activation
(after SiLU, before the stride-2 depthwise conv) of the first block of stages 6, 4, 3 and 2,
Keras' ``block6a_expand_activation`` (672 ch, H/16), ``block4a_expand_activation`` (240, H/8),
``block3a_expand_activation`` (144, H/4) and ``block2a_expand_activation`` (96, H/2); the
bottom is ``top_activation`` = ``features.8`` (1280, H/32).

Decoder (``decoder_block_type='upsampling'``, filters 256, 128, 64, 32, 16, batchnorm): five
blocks of nearest 2x upsampling (Keras' ``UpSampling2D``) -> concat the skip (none in the last)
-> twice (Conv 3x3, no bias -> BN -> ReLU); head ``Conv 3x3`` (16 -> n_out, bias).

Parameters, n_out = 1: encoder 4,007,548 (torchvision's 5,288,548 minus its 1,281,000-parameter
classifier); whole net 10,071,501 trainable, 10,115,501 with the BatchNorm running means and
variances (Keras' "Total params", which counts BN moving statistics). The paper reports "271
layers and 10 million trainable parameters"; :func:`count_parameters` counts layers its own way.

What differs from Keras: stride-2 convs pad symmetrically (k // 2 each side) where Keras
EfficientNet pads asymmetrically (``correct_pad``), so ImageNet weights ported from Keras would
shift by a pixel; BatchNorm everywhere uses torch's eps 1e-5 and momentum 0.1 (Keras: 1e-3 and
0.99, i.e. torch momentum 0.01); weights start from scratch (torchvision's init for the
encoder, Keras' he_uniform / glorot_uniform for the decoder and head) unless
:func:`load_encoder_weights` is given a file.
"""

from __future__ import annotations

import os
from typing import cast

from slidesift.errors import CheckpointError, ConfigError, require

require("torch", "learn", "the U-Net baseline (training and torch inference)")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from slidesift.checkpoint import read_safetensors  # noqa: E402

__all__ = ["ARCHITECTURE", "DECODER_FILTERS", "EfficientNetB0Encoder", "UnetEffB0",
           "check_input", "count_parameters", "load_encoder_weights"]  # fmt: skip

ARCHITECTURE = "unet-effb0"
#: B0 stages: (expand ratio, kernel, stride, in channels, out channels, blocks).
B0_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
             (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))  # fmt: skip
#: The stages whose first block's expand activation is a skip, deepest first.
SKIP_STAGES = (6, 4, 3, 2)
SKIP_CHANNELS = (672, 240, 144, 96)
BOTTOM_CHANNELS = 1280
DECODER_FILTERS = (256, 128, 64, 32, 16)
STOCHASTIC_DEPTH = 0.2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: H and W must be multiples of this (five stride-2 halvings).
SIDE_MULTIPLE = 32

WEIGHTS_HINT = (
    "give a safetensors file of torchvision's efficientnet_b0 features (keys 0.0.weight, ... "
    'or features.0.0.weight, ...); on a machine with torchvision: python -c "import torchvision, '
    "safetensors.torch as st; m = torchvision.models.efficientnet_b0(weights='IMAGENET1K_V1'); "
    "st.save_file(m.features.state_dict(), 'effb0-imagenet.safetensors')\""
)


class _ConvBNAct(nn.Sequential):
    """``Conv2d (no bias) -> BatchNorm2d [-> activation]``; torchvision's Conv2dNormActivation."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.SiLU) -> None:  # fmt: skip
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class _SqueezeExcitation(nn.Module):
    """Channel gate ``x * sigmoid(fc2(SiLU(fc1(mean_hw(x)))))``; ``(B, C, h, w)`` -> same."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        out: torch.Tensor = x * self.scale_activation(s)
        return out


class _StochasticDepth(nn.Module):
    """Drop a sample's whole residual branch with probability ``p`` in training (row mode)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device)
        return x * noise.bernoulli_(keep).div_(keep)


class MBConv(nn.Module):
    """EfficientNet's inverted residual block with squeeze-excitation (module docstring).

    ``(B, c_in, h, w)`` -> ``(B, c_out, h / stride, w / stride)``.
    """

    def __init__(
        self, expand: int, k: int, stride: int, c_in: int, c_out: int, drop: float
    ) -> None:
        super().__init__()
        c_exp = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_ConvBNAct(c_in, c_exp, 1))
        layers += [
            _ConvBNAct(c_exp, c_exp, k, stride, groups=c_exp),
            _SqueezeExcitation(c_exp, max(1, c_in // 4)),
            _ConvBNAct(c_exp, c_out, 1, act=None),
        ]
        self.expands = expand != 1
        self.residual = stride == 1 and c_in == c_out
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = _StochasticDepth(drop)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block's output and its expand activation (``None`` without an expand conv)."""
        layers = list(self.block)
        expanded = layers.pop(0)(x) if self.expands else None
        h = x if expanded is None else expanded
        for layer in layers:
            h = layer(h)
        if self.residual:
            h = self.stochastic_depth(h) + x
        return h, expanded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[0]


class EfficientNetB0Encoder(nn.Module):
    """EfficientNet-B0 without its classifier, laid out as torchvision's ``features``.

    Attributes
    ----------
    features
        ``nn.Sequential`` of 9: stem, the seven MBConv stages, the 1x1 head conv.
    """

    def __init__(self) -> None:
        super().__init__()
        total = sum(stage[5] for stage in B0_STAGES)
        stages: list[nn.Module] = [_ConvBNAct(3, B0_STAGES[0][3], 3, stride=2)]
        index = 0
        for expand, kernel, stride, c_in, c_out, repeats in B0_STAGES:
            blocks: list[nn.Module] = []
            for r in range(repeats):
                drop = STOCHASTIC_DEPTH * index / total
                blocks.append(
                    MBConv(expand, kernel, stride if r == 0 else 1, c_in if r == 0 else c_out,
                           c_out, drop)
                )  # fmt: skip
                index += 1
            stages.append(nn.Sequential(*blocks))
        stages.append(_ConvBNAct(B0_STAGES[-1][4], BOTTOM_CHANNELS, 1))
        self.features = nn.Sequential(*stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised ``(B, 3, H, W)`` -> ``[bottom, skip6, skip4, skip3, skip2]``.

        Shapes ``(B, 1280, H/32, W/32)``, ``(B, 672, H/16, W/16)``, ``(B, 240, H/8, W/8)``,
        ``(B, 144, H/4, W/4)``, ``(B, 96, H/2, W/2)``.
        """
        skips: dict[int, torch.Tensor] = {}
        x = self.features[0](x)
        for i in range(1, 8):
            for j, block in enumerate(cast(nn.Sequential, self.features[i])):
                x, expanded = cast(MBConv, block).run(x)
                if j == 0 and i in SKIP_STAGES and expanded is not None:
                    skips[i] = expanded
        return [self.features[8](x), *(skips[i] for i in SKIP_STAGES)]


class _DecoderBlock(nn.Module):
    """Nearest 2x upsample -> concat skip -> 2 x (Conv 3x3 -> BN -> ReLU)."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = _ConvBNAct(c_in + c_skip, c_out, 3, act=nn.ReLU)
        self.conv2 = _ConvBNAct(c_out, c_out, 3, act=nn.ReLU)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.upsample(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        out: torch.Tensor = self.conv2(self.conv1(x))
        return out


class UnetEffB0(nn.Module):
    """U-Net with an EfficientNet-B0 encoder (see the module docstring).

    Parameters
    ----------
    n_out
        Output channels (logits): 1 for tumor vs non-tumor.

    Attributes
    ----------
    encoder
        :class:`EfficientNetB0Encoder`, ``encoder.features`` as torchvision's.
    decoder
        The five decoder blocks, deepest first.
    head
        ``Conv2d(16, n_out, 3, padding=1)`` with bias.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_out: int = 1) -> None:
        super().__init__()
        if int(n_out) < 1:
            raise ConfigError("n_out", n_out, "1 or more output channels")
        self.n_out = int(n_out)
        for name, value in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            self.register_buffer(name, torch.tensor(value).view(1, 3, 1, 1), persistent=False)
        self.encoder = EfficientNetB0Encoder()
        ins = (BOTTOM_CHANNELS, *DECODER_FILTERS[:-1])
        skips = (*SKIP_CHANNELS, 0)
        self.decoder = nn.ModuleList(
            _DecoderBlock(c_in, c_skip, c_out)
            for c_in, c_skip, c_out in zip(ins, skips, DECODER_FILTERS, strict=True)
        )
        self.head = nn.Conv2d(DECODER_FILTERS[-1], self.n_out, 3, padding=1)
        for m in self.decoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # Keras he_uniform
        nn.init.xavier_uniform_(self.head.weight)  # Keras glorot_uniform
        nn.init.zeros_(cast(torch.Tensor, self.head.bias))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` in [0, 1] -> the encoder's ``[bottom, skip6, skip4, skip3, skip2]``."""
        check_input(x)
        encoded: list[torch.Tensor] = self.encoder((x - self.mean) / self.std)
        return encoded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float RGB in [0, 1] -> ``(B, n_out, H, W)`` logits."""
        h, *skips = self.features(x)
        for i, block in enumerate(self.decoder):
            h = block(h, skips[i] if i < len(skips) else None)
        out: torch.Tensor = self.head(h)
        return out


def check_input(x: torch.Tensor) -> None:
    """Raise :class:`ConfigError` unless ``x`` is ``(B, 3, H, W)`` with H, W multiples of 32."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ConfigError("input shape", tuple(x.shape), "(batch, 3, height, width) RGB tiles")
    h, w = int(x.shape[2]), int(x.shape[3])
    if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE or h == 0 or w == 0:
        valid = f"positive multiples of {SIDE_MULTIPLE} (the U-Net's encoder halves them 5 times)"
        raise ConfigError("tile", f"{h}x{w}", f"height and width must be {valid}")


def count_parameters(net: nn.Module) -> dict[str, int]:
    """Parameter and layer counts of ``net``.

    Returns
    -------
    dict
        ``trainable``: elements of the parameters with ``requires_grad``;
        ``with_bn_statistics``: that plus every BatchNorm's running mean and variance (Keras'
        "Total params"); ``layers``: leaf modules (no child modules), i.e. each Conv2d,
        BatchNorm2d, activation (SiLU, ReLU, Sigmoid), pooling, upsampling and stochastic-depth
        module. Operations that are not modules (ImageNet scaling, concatenation, residual
        add, the squeeze-excitation product) are not counted, unlike Keras, which counts
        every one of them as a layer.
    """
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    stats = sum(
        b.numel()
        for m in net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b in (m.running_mean, m.running_var)
        if b is not None
    )
    layers = sum(1 for m in net.modules() if next(m.children(), None) is None)
    return {"trainable": trainable, "with_bn_statistics": trainable + stats, "layers": layers}


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:5])
    return f"{shown} and {len(keys) - 5} more" if len(keys) > 5 else shown


def load_encoder_weights(net: UnetEffB0, path: str | os.PathLike[str]) -> None:
    """Load EfficientNet-B0 encoder weights (ImageNet, say) from a safetensors file.

    Parameters
    ----------
    net
        The U-Net; only ``net.encoder.features`` changes, and only when every tensor fits.
    path
        A safetensors file of torchvision's efficientnet_b0 ``features``: keys as
        ``features.state_dict()`` names them (``0.0.weight``, ...), or prefixed ``features.``
        (a whole torchvision model; its ``classifier.*`` tensors are ignored) or
        ``encoder.features.`` (this network's own names). Read without pickle.

    Raises
    ------
    CheckpointError
        The file cannot be read, or a feature tensor is missing, unexpected or of another shape;
        the hint says how to make a valid file with torchvision.
    """
    try:
        tensors, _ = read_safetensors(path, framework="torch")
    except CheckpointError as err:  # its hint is about training runs' epoch files
        raise CheckpointError(path, err.reason, WEIGHTS_HINT) from None
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    doubled: list[str] = []
    for key, tensor in tensors.items():
        if key.startswith("classifier."):
            continue
        name = key.removeprefix("encoder.features." if key.startswith("encoder.") else "features.")
        if name in state:
            doubled.append(key)
        state[name], origin[name] = tensor, key
    target = net.encoder.features.state_dict()
    missing = sorted(f"features.{k}" for k in set(target) - set(state))
    unexpected = sorted(origin[k] for k in set(state) - set(target))
    shapes = sorted(
        f"features.{k} {tuple(state[k].shape)} (want {tuple(target[k].shape)})"
        for k in set(state) & set(target)
        if state[k].shape != target[k].shape
    )
    problems = [
        f"{len(keys)} {what}: {_listed(keys)}"
        for what, keys in [
            ("tensor(s) twice", doubled),
            ("encoder tensor(s) missing", missing),
            ("unexpected tensor(s)", unexpected),
            ("tensor(s) of another shape", shapes),
        ]
        if keys
    ]
    if problems:
        reason = "not EfficientNet-B0 encoder weights: " + "; ".join(problems)
        raise CheckpointError(path, reason, WEIGHTS_HINT)
    net.encoder.features.load_state_dict(state, strict=True)
