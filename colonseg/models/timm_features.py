"""A timm backbone as a multi-scale feature extractor, with the offline ImageNet weights.

The hand-written architectures (``attention_unet``, ``pranet``, ``emcad``) ask for the feature maps
at given strides; any timm model that supports ``features_only`` works (EfficientNet-Lite with the
offline weights by default; Res2Net-50, PVTv2-b2, ResNet50... with ``encoder_weights=PATH``).
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from colonseg.errors import ColonsegError
from colonseg.models.encoders import load_encoder_state_dict

__all__ = ["TimmFeatures", "load_imagenet_weights"]


def load_imagenet_weights(
    body: nn.Module, encoder: str, encoder_weights: str | None = None, in_channels: int = 3
) -> None:
    """Load ImageNet weights (offline, or a user's file) into a timm ``features_only`` model.

    Every encoder tensor must be filled; the classifier's extra tensors are dropped.
    """
    if in_channels != 3:
        raise ColonsegError("ImageNet encoder weights need in_channels=3; use pretrained=False")
    state = load_encoder_state_dict(encoder, encoder_weights)
    own = body.state_dict()
    # feature wrappers keep the classifier's names, sometimes under a "model." prefix
    prefix = "model." if own and all(k.startswith("model.") for k in own) else ""
    state = {prefix + k: v for k, v in state.items() if prefix + k in own}
    absent = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if absent:
        raise ColonsegError(
            f"encoder weights for {encoder} miss {len(absent)} tensors: {absent[:3]}"
        )
    body.load_state_dict(state, strict=False)


class TimmFeatures(nn.Module):
    """Feature maps of ``encoder`` at ``strides`` (finest first); ``.channels`` lists their widths.

    Example:
        >>> enc = TimmFeatures("tf_efficientnet_lite0", strides=(4, 8, 16, 32), pretrained=False)
        >>> [f.shape[1] for f in enc(torch.rand(1, 3, 64, 64))]  # [24, 40, 112, 320]
    """

    def __init__(
        self,
        encoder: str,
        strides: tuple[int, ...] = (2, 4, 8, 16, 32),
        in_channels: int = 3,
        pretrained: bool = True,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        try:
            probe = timm.create_model(encoder, pretrained=False, features_only=True)
        except Exception as exc:  # unknown name or no features_only support
            raise ColonsegError(f"encoder '{encoder}': {exc}") from None
        reductions = probe.feature_info.reduction()
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise ColonsegError(
                f"encoder '{encoder}' has feature strides {reductions}, not {missing}"
            )
        indices = tuple(reductions.index(s) for s in strides)
        self.body = timm.create_model(
            encoder,
            pretrained=False,
            features_only=True,
            out_indices=indices,
            in_chans=in_channels,
        )
        self.channels = list(self.body.feature_info.channels())
        self.strides = tuple(strides)
        if pretrained or encoder_weights:
            load_imagenet_weights(self.body, encoder, encoder_weights, in_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))
