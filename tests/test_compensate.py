"""Tests of mean-activation compensation: exact hand-set folds, index bookkeeping, and the effect on a real model.

The hand-set checks use dyadic numbers (small integers over powers of two), so every product and sum is exact in
float32 and "unchanged output" can be checked with ``torch.equal``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from yolo_ldac.pruning.compensate import InputMeans


def _dyadic(*shape, seed: int = 0, denom: int = 4, lo: int = -8, hi: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, shape, generator=g).float() / denom


def _input(constants: dict[int, float], channels: int, seed: int = 0, hw: int = 5) -> torch.Tensor:
    """A (2, channels, hw, hw) input whose channels in ``constants`` hold that constant value, the others vary."""
    x = _dyadic(2, channels, hw, hw, seed=seed)
    for c, v in constants.items():
        x[:, c] = v
    return x


def _remove_inputs(conv: nn.Conv2d, removed: list[int]) -> None:
    tp.prune_conv_in_channels(conv, sorted(removed))


@torch.no_grad()
def test_fold_into_conv_bias_is_exact():
    conv = nn.Conv2d(2, 1, 1, bias=True)
    conv.weight.copy_(torch.tensor([0.5, -0.25]).view(1, 2, 1, 1))
    conv.bias.fill_(0.125)
    x = _input({1: 3.0}, channels=2)
    y = conv(x)
    means = InputMeans.measure(nn.Sequential(conv), [x])
    assert means.means[conv][1].item() == 3.0

    assert means.fold(conv, [1]) is True
    assert conv.bias.item() == 0.125 - 0.25 * 3.0
    _remove_inputs(conv, [1])
    means.drop(conv, [1])
    assert conv.in_channels == 1 and means.means[conv].shape == (1,)
    assert torch.equal(conv(x[:, :1]), y)


@torch.no_grad()
def test_fold_into_batchnorm_running_mean_is_exact():
    from ultralytics.nn.modules import Conv

    block = Conv(2, 1, k=1).eval()  # conv (no bias) -> BatchNorm2d -> SiLU
    assert block.conv.bias is None
    block.conv.weight.copy_(torch.tensor([0.5, -0.25]).view(1, 2, 1, 1))
    bn = block.bn
    bn.eps = 0.0  # sqrt(running_var) = 2 exactly
    bn.running_var.fill_(4.0)
    bn.running_mean.fill_(0.5)
    bn.weight.fill_(1.5)
    bn.bias.fill_(-0.25)
    x = _input({1: 3.0}, channels=2)
    y = block(x)
    means = InputMeans.measure(block, [x])
    assert means.bn_after[block.conv] is bn

    assert means.fold(block.conv, [1]) is True
    assert block.conv.bias is None  # folded into BN, not into a new bias
    assert bn.running_mean.item() == 0.5 + 0.25 * 3.0
    _remove_inputs(block.conv, [1])
    assert torch.equal(block(x[:, :1]), y)


@torch.no_grad()
def test_fold_creates_bias_when_there_is_none():
    conv = nn.Conv2d(2, 2, 1, bias=False)
    conv.weight.copy_(torch.tensor([[0.5, -0.25], [1.0, 0.75]]).view(2, 2, 1, 1))
    x = _input({0: -2.0}, channels=2)
    y = conv(x)
    means = InputMeans.measure(nn.Sequential(conv), [x])
    assert means.fold(conv, [0]) is True
    assert isinstance(conv.bias, nn.Parameter)
    assert conv.bias.tolist() == [-1.0, -2.0]
    _remove_inputs(conv, [0])
    assert torch.equal(conv(x[:, 1:]), y)


@torch.no_grad()
def test_fold_sums_over_the_kernel_and_several_channels():
    """3x3 kernel without padding (every output cell sees the whole kernel): the shift is W summed over the kernel."""
    conv = nn.Conv2d(4, 3, 3, padding=0, bias=True)
    conv.weight.copy_(_dyadic(3, 4, 3, 3, seed=1, denom=8))
    conv.bias.copy_(_dyadic(3, seed=2, denom=8))
    x = _input({1: 1.5, 3: -0.5}, channels=4, hw=6)
    y = conv(x)
    means = InputMeans.measure(nn.Sequential(conv), [x])
    assert means.fold(conv, [1, 3]) is True
    _remove_inputs(conv, [1, 3])
    assert torch.equal(conv(x[:, [0, 2]]), y)


@torch.no_grad()
def test_drop_keeps_indices_aligned_across_successive_prunes():
    def make():
        conv = nn.Conv2d(4, 2, 1, bias=True)
        conv.weight.copy_(_dyadic(2, 4, 1, 1, seed=3, denom=8))
        conv.bias.copy_(_dyadic(2, seed=4, denom=8))
        return conv

    x = _input({1: 2.0, 2: 3.0, 3: 5.0}, channels=4)
    conv = make()
    y = conv(x)
    means = InputMeans.measure(nn.Sequential(conv), [x])
    m0 = means.means[conv][0].item()

    # Remove original channel 1, then original channel 2 (index 1 after the first removal).
    means.fold(conv, [1])
    _remove_inputs(conv, [1])
    means.drop(conv, [1])
    assert means.means[conv].tolist() == [m0, 3.0, 5.0]
    means.fold(conv, [1])
    _remove_inputs(conv, [1])
    means.drop(conv, [1])
    assert means.means[conv].tolist() == [m0, 5.0]
    assert torch.equal(conv(x[:, [0, 3]]), y)

    # Without drop the second fold would use channel 1's mean (2.0) for channel 2 (3.0): the output moves.
    conv = make()
    means = InputMeans.measure(nn.Sequential(conv), [x])
    means.fold(conv, [1])
    _remove_inputs(conv, [1])
    means.fold(conv, [1])
    _remove_inputs(conv, [1])
    assert not torch.equal(conv(x[:, [0, 3]]), y)


@torch.no_grad()
def test_fold_declines_what_it_cannot_compensate():
    x = torch.rand(1, 4, 5, 5)
    dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=True)
    other = nn.Conv2d(4, 2, 1, bias=True)
    means = InputMeans.measure(nn.Sequential(dw), [x])
    bias = dw.bias.clone()
    assert means.fold(dw, [1]) is False  # depthwise: the channel's whole output goes with it
    assert means.fold(other, [1]) is False  # never measured
    assert means.fold(dw, []) is False
    assert torch.equal(dw.bias, bias)
    means.drop(other, [0])  # unknown conv: a no-op


# --- a real model -------------------------------------------------------------------------------------------

IMGSZ = 160


def _real_images() -> torch.Tensor:
    """bus.jpg and zidane.jpg letterboxed to 160x160, RGB, in [0, 1]: a (2, 3, 160, 160) batch."""
    import cv2
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ASSETS

    imgs = []
    for name in ("bus.jpg", "zidane.jpg"):
        path = ASSETS / name
        if not path.is_file():
            pytest.skip(f"{path} not found in the installed ultralytics package")
        im = LetterBox((IMGSZ, IMGSZ), auto=False)(image=cv2.imread(str(path)))
        imgs.append(torch.from_numpy(im[..., ::-1].copy()).permute(2, 0, 1).float() / 255.0)
    return torch.stack(imgs)


@pytest.mark.slow
def test_compensation_keeps_a_pretrained_model_closer_to_dense(shared_weights):
    from yolo_ldac.nn.adapter import load_detection_model, protected_layers, rewrite_split_blocks
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.criteria import build_criterion
    from yolo_ldac.pruning.engine import ChannelPruner

    dense_model = load_detection_model(shared_weights("yolo11n-coco.pt"))
    rewrite_split_blocks(dense_model)
    dense_model.eval()
    x = _real_images()
    batches = [{"img": x[:1]}, {"img": x[1:]}]
    dense = measure(dense_model, IMGSZ, protected=protected_layers(dense_model))
    dense_channels = layer_channels(dense_model)
    with torch.no_grad():
        y_dense = dense_model(x)[0]

    pruned, moved = {}, {}
    for compensate in (True, False):
        model = copy.deepcopy(dense_model)
        # protected layers must be this copy's modules, not the original's
        pruner = ChannelPruner(model, build_criterion("l1"), dense, dense_channels, protected_layers(model),
                               imgsz=IMGSZ, round_to=1, floor=0.125, compensate=compensate)
        result = pruner.step(0.04, batches)
        assert abs(result.reached_ratio - 0.04) <= 0.01
        model.eval()
        with torch.no_grad():
            y = model(x)[0]
        assert y.shape == y_dense.shape
        pruned[compensate] = layer_channels(model)
        moved[compensate] = float((y - y_dense).abs().mean())

    assert pruned[True] == pruned[False]  # compensation changes no pruning decision, only the kept weights
    assert pruned[True] != dense_channels
    assert moved[True] < moved[False], moved
