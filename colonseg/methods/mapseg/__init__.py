"""MAPSeg: unsupervised polyp segmentation from normal frames (SIMPO synthetic lesions)."""
