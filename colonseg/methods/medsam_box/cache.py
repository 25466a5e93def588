"""Phase 1 of Automatic MedSAM: image embeddings of the frozen backbone, cached on disk.

One ``.npy`` file (fp16, ``256×64×64``, 2 MiB) per image or NIfTI slice, named by the SHA-256 of
the file's bytes, the slice and the backbone: a changed file gets a new entry, a renamed one
keeps its entry, and a killed run resumes where it stopped (each file is written atomically).

Example:
    >>> cache = EmbeddingCache("~/.cache/colonseg/medsam", net)
    >>> cache.fill(samples)                      # computes what is missing
    >>> emb = cache.load(samples[0])             # (256, 64, 64) float16 tensor
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from colonseg.data.datamodule import prepare_images
from colonseg.data.io import file_digest, write_atomic
from colonseg.methods.medsam_box.data import BoxSample, read_sample
from colonseg.models.medsam import SAM_MEAN, SAM_STD, AutoMedSAM

__all__ = ["EmbeddingCache", "backbone_tag"]


def backbone_tag(net: AutoMedSAM) -> str:
    """What identifies the embeddings a backbone makes: its name and its weights."""
    h = hashlib.sha256(net.backbone.encode())
    for name, tensor in sorted(net.sam.image_encoder.state_dict().items())[:8]:
        h.update(name.encode())
        h.update(tensor.float().flatten()[:64].numpy().tobytes())
    return f"{net.backbone}-{h.hexdigest()[:12]}"


class EmbeddingCache:
    """Image embeddings of ``net``'s frozen encoder under ``root/<backbone tag>/``."""

    def __init__(self, root: str | Path, net: AutoMedSAM) -> None:
        self.net = net
        self.dir = Path(root).expanduser() / backbone_tag(net)
        self._digests: dict[tuple, str] = {}

    def key(self, sample: BoxSample) -> str:
        path = sample.image.resolve()
        st = path.stat()
        stamp = (path, st.st_size, st.st_mtime_ns)  # hash each file once while it is unchanged
        if stamp not in self._digests:
            self._digests[stamp] = file_digest(path)
        digest = self._digests[stamp]
        return digest if sample.slice is None else f"{digest}-z{sample.slice}"

    def path(self, sample: BoxSample) -> Path:
        key = self.key(sample)
        return self.dir / key[:2] / f"{key}.npy"

    def fill(
        self,
        samples: list[BoxSample],
        device: str = "cpu",
        batch_size: int | None = None,
        progress: bool = True,
    ) -> int:
        """Compute the embeddings not cached yet; returns how many were computed.

        ``batch_size`` defaults to 1 on the CPU (batching TinyViT there is slower per image) and
        8 on GPUs."""
        batch_size = batch_size or (1 if device == "cpu" else 8)
        todo, seen = [], set()
        for s in samples:
            p = self.path(s)
            if not p.is_file() and p not in seen:
                todo.append(s)
                seen.add(p)
        net = self.net.to(device)
        size = (net.input_size, net.input_size)
        bar = tqdm(total=len(todo), desc="caching embeddings", disable=not progress or not todo)
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            images = [read_sample(s)[0] for s in chunk]
            x = prepare_images(images, size, SAM_MEAN, SAM_STD).to(device)
            with torch.inference_mode(), torch.autocast(device, enabled=device == "cuda"):
                emb = net.embed(x).half().cpu().numpy()
            for s, e in zip(chunk, emb, strict=True):
                write_atomic(self.path(s), lambda tmp, e=e: np.save(str(tmp), e))
            bar.update(len(chunk))
        bar.close()
        return len(todo)

    def load(self, sample: BoxSample) -> torch.Tensor:
        """The cached ``(256, 64, 64)`` float16 embedding of a sample."""
        return torch.from_numpy(np.load(self.path(sample)))
