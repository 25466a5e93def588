"""Automatic MedSAM: box-supervised training of a prompt module on a frozen MedSAM."""

from __future__ import annotations

from colonseg.methods.medsam_box.method import MedsamBox

__all__ = ["MedsamBox"]
