"""U-Net, UNet++ and DeepLabV3+ from segmentation_models_pytorch on timm encoders."""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from colonseg.errors import ColonsegError
from colonseg.models.encoders import load_encoder_state_dict
from colonseg.models.registry import MODELS

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
        if in_channels != 3:
            raise ColonsegError("ImageNet encoder weights need in_channels=3; use pretrained=False")
        state = load_encoder_state_dict(encoder, encoder_weights)
        target = model.encoder.model
        missing, _ = target.load_state_dict(state, strict=False)
        if missing:
            raise ColonsegError(
                f"encoder weights for {encoder} miss {len(missing)} tensors: {missing[:3]}"
            )
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
