"""MSSG: unsupervised gland segmentation (selective proposal mining + morphology-aware grouping)."""
