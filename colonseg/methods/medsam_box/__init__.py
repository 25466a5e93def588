"""Automatic MedSAM: box-supervised training of a prompt module on a frozen MedSAM."""
