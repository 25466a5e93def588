"""U-Net, UNet++, DeepLabV3+ and PSPNet from segmentation_models_pytorch on timm encoders.

Any timm name works as ``encoder`` (``tf_efficientnet_lite0`` with offline ImageNet weights by
default; the NeoPolyp reference encoders are ``resnet50`` and ``regnetx_320``, whose weights a
user passes as ``encoder_weights=PATH``).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from colonseg.models.registry import MODELS
from colonseg.models.timm_features import load_imagenet_weights

__all__: list[str] = []


def _create_smp(
    arch: str,
    *,
    encoder: str,
    in_channels: int,
    classes: int,
    pretrained: bool,
    encoder_weights: str | None = None,
    **kwargs,
) -> nn.Module:
    model = smp.create_model(
        arch,
        encoder_name=f"tu-{encoder}",
        encoder_weights=None,
        in_channels=in_channels,
        classes=classes,
        **kwargs,
    )
    if pretrained or encoder_weights:
        load_imagenet_weights(model.encoder.model, encoder, encoder_weights, in_channels)
    return model


@MODELS.register("unet")
def unet(**kw) -> nn.Module:
    """U-Net (Ronneberger et al., MICCAI 2015) with a timm encoder."""
    return _create_smp("unet", **kw)


@MODELS.register("unetplusplus")
def unetplusplus(**kw) -> nn.Module:
    """UNet++ (Zhou et al., DLMIA 2018) with a timm encoder."""
    return _create_smp("unetplusplus", **kw)


@MODELS.register("deeplabv3plus")
def deeplabv3plus(**kw) -> nn.Module:
    """DeepLabV3+ (Chen et al., ECCV 2018) with a timm encoder."""
    return _create_smp("deeplabv3plus", **kw)


@MODELS.register("pspnet")
def pspnet(**kw) -> nn.Module:
    """PSPNet (Zhao et al., CVPR 2017) with a timm encoder: MSSG's segmenter."""
    return _create_smp("pspnet", **kw)
