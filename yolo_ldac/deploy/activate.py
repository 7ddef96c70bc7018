"""Make a randomly initialised detector react to its input, so that parity checks on it mean something.

A detector built from a yaml keeps BatchNorm at running mean 0 / var 1 while its convolutions shrink the signal layer
after layer: its decoded output is then set by the head's bias init (box offsets 2.0, class logit ~ -9) and barely
by the network, and a wrong graph or a broken export can pass a parity check. :func:`activate_batchnorm` gives
every BatchNorm seeded random affine terms and the statistics of real activations (Ultralytics' bus.jpg), so the
outputs depend on the input and on every layer, as in a trained model.
"""

from __future__ import annotations

import torch
import torch.nn as nn

GAMMA_LOW, GAMMA_SPREAD, BETA_STD = 0.4, 0.2, 0.1


def real_image_batch(n: int = 4, size: int = 160, seed: int = 0) -> torch.Tensor:
    """bus.jpg letterboxed to ``size`` and ``n - 1`` seeded random ``size`` x ``size`` crops of it, as an NCHW RGB
    float batch in [0, 1]."""
    import cv2
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ASSETS

    g = torch.Generator().manual_seed(seed)
    bgr = cv2.imread(str(ASSETS / "bus.jpg"))
    crops = [torch.from_numpy(LetterBox((size, size), auto=False)(image=bgr)[..., ::-1].copy()).permute(2, 0, 1)]
    img = bgr[..., ::-1]
    img = cv2.resize(img, (img.shape[1] * 3 * size // (2 * img.shape[0]), 3 * size // 2))
    for _ in range(n - 1):
        y = int(torch.randint(0, img.shape[0] - size + 1, (1,), generator=g))
        x = int(torch.randint(0, img.shape[1] - size + 1, (1,), generator=g))
        crops.append(torch.from_numpy(img[y: y + size, x: x + size].copy()).permute(2, 0, 1))
    return torch.stack(crops).float() / 255.0


@torch.no_grad()
def activate_batchnorm(model: nn.Module, seed: int = 0, images: torch.Tensor | None = None) -> nn.Module:
    """Give every BatchNorm of ``model`` (in place) seeded affine terms and the batch statistics of ``images``
    (default :func:`real_image_batch`); the model is left in eval mode and returned.

    Example:
        >>> m = activate_batchnorm(load_detection_model("yolo11n.yaml"))  # doctest: +SKIP
    """
    g = torch.Generator().manual_seed(seed)
    images = real_image_batch(seed=seed) if images is None else images
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the running stats become this batch's statistics
        m.weight.copy_(torch.rand(m.num_features, generator=g) * GAMMA_SPREAD + GAMMA_LOW)
        m.bias.copy_(torch.randn(m.num_features, generator=g) * BETA_STD)
    try:
        model.train()
        model(images.to(next(model.parameters()).device))
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.eval()
    return model
