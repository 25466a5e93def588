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
    _drop_unused_blocks(model.encoder.model)
    return model


def _drop_unused_blocks(features: nn.Module) -> None:
    """Remove the stages after the deepest feature a shallow decoder reads (PSPNet reads 1/8).

    timm's EfficientNet feature extractors build every stage whatever ``out_indices`` asks for;
    the unused ones would only add dead weights to the checkpoint.
    """
    names = features.feature_info.module_name()
    used = [int(n.split(".")[1]) for n in names if n.startswith("blocks.")]
    blocks = getattr(features, "blocks", None)
    if used and isinstance(blocks, nn.Sequential) and len(blocks) > max(used) + 1:
        features.blocks = blocks[: max(used) + 1]


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
