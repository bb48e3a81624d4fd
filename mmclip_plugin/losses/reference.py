"""The public reference's hard-negative losses, written the way it computes them: a Python loop over samples.

Kept as a baseline for benchmarks (``benchmarks/``) and as an independent check of
:class:`~mmclip_plugin.losses.HardNegativeLoss`: with ``in_batch=None``, ``image_negatives="sigmoid"``,
``text_negatives="softmax"`` and ``hard_sigmoid_reduction="sum"`` both give the same values.

- image negatives: per sample, the caption against its 1 + K images; SigLIP log-likelihood with label +1
  for the positive image and -1 for each negative, summed over the 1 + K entries; mean over the batch.
- text negatives: per sample, the image against its 1 + K captions; cross-entropy of the positive
  (index 0); mean over the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_loop_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
    *,
    neg_image_features: torch.Tensor | None = None,
    neg_text_features: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample loop losses of the reference (no masks: every sample has the same K).

    Args:
        image_features: (B, D) normalised image embeddings.
        text_features: (B, D) normalised caption embeddings.
        logit_scale: already-exponentiated scale.
        logit_bias: bias of the sigmoid image-negative loss (None: 0).
        neg_image_features: (B, Ki, D) image negatives per caption, or None to skip that loss.
        neg_text_features: (B, Kt, D) caption negatives per image, or None to skip that loss.

    Returns:
        ``"image_negatives"`` / ``"text_negatives"`` for the losses computed and their sum as ``"loss"``.
    """
    batch = image_features.shape[0]
    out: dict[str, torch.Tensor] = {}
    if neg_image_features is not None:
        n = 1 + neg_image_features.shape[1]
        logits = torch.zeros(batch, n, dtype=image_features.dtype, device=image_features.device)
        for i in range(batch):
            images = torch.cat([image_features[i : i + 1], neg_image_features[i]], dim=0)  # (1 + Ki, D)
            sim = images @ text_features[i] * logit_scale
            if logit_bias is not None:
                sim = sim + logit_bias
            logits[i] = sim
        labels = -torch.ones_like(logits)
        labels[:, 0] = 1.0
        out["image_negatives"] = (-F.logsigmoid(labels * logits).sum(dim=-1)).mean()
    if neg_text_features is not None:
        losses = []
        for i in range(batch):
            captions = torch.cat([text_features[i : i + 1], neg_text_features[i]], dim=0)  # (1 + Kt, D)
            logits = (image_features[i] @ captions.T * logit_scale)[None]
            losses.append(F.cross_entropy(logits, torch.zeros(1, dtype=torch.long, device=logits.device)))
        out["text_negatives"] = torch.stack(losses).mean()
    if not out:
        raise ValueError("reference_loop_loss needs neg_image_features and/or neg_text_features")
    out["loss"] = sum(out.values())
    return out
