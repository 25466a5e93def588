"""The model registry and the one entry point that builds a model by name."""

from __future__ import annotations

from torch import nn

from colonseg.errors import ColonsegError
from colonseg.registry import Registry

__all__ = ["MODELS", "create_model", "list_models"]

MODELS = Registry("model")


def create_model(
    name: str,
    *,
    encoder: str = "tf_efficientnet_lite0",
    in_channels: int = 3,
    classes: int = 1,
    pretrained: bool = True,
    **kwargs,
) -> nn.Module:
    """Build a registered segmentation model; it returns logits ``(B, classes, H, W)``.

    Example:
        >>> model = create_model("unet", encoder="tf_efficientnet_lite0", classes=1)
        >>> model(torch.rand(1, 3, 64, 64)).shape  # (1, 1, 64, 64)

    Raises:
        ValueError: unknown name (with a did-you-mean hint and the list of choices).
    """
    try:
        return MODELS.create(
            name,
            encoder=encoder,
            in_channels=in_channels,
            classes=classes,
            pretrained=pretrained,
            **kwargs,
        )
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        bad = str(exc).split("argument")[-1].strip()
        raise ColonsegError(
            f"model '{name}' does not take the option {bad} (model.kwargs in a config)"
        ) from None


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered architectures."""
    return MODELS.names(pattern)
