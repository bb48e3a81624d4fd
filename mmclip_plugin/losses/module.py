"""``HardNegativeLoss``: in-batch, image-negative and text-negative contrastive terms in one vectorised module.

Shapes: B local batch, W world size, D embedding width, Ki / Kt image / caption negatives per sample.
Every term builds a logits matrix whose rows have one positive column, and hands it to the registered
loss kind (:mod:`.terms`); nothing loops over samples.

Distributed semantics (``gather=True``, W > 1): each rank returns a loss whose mean over ranks is the
loss of one process on the global batch, and whose gradients, summed across ranks by the
all_gather backward and averaged by DDP, are that process's gradients. The softmax in-batch term
computes the full (WB, WB) matrix on every rank (open_clip ``ClipLoss``, ``local_loss=False``) or
its own B rows against all WB columns (``local_loss=True``); the sigmoid in-batch term scores the
rank's B images against all WB captions and divides by B, which equals open_clip ``SigLipLoss``'s
neighbour exchange in value and gradient while using one all_gather. The hard terms are per-sample
and stay local.
"""
from __future__ import annotations

import torch
from torch import nn

from mmclip_plugin.config import KIND_NAMES, LossConfig

from ..distributed import gather_features, gather_no_grad
from .terms import PairLoss, get_loss


class HardNegativeLoss(nn.Module):
    """The MMCLIP training loss.

    The logit scale multiplies every term; the logit bias is added only to the logits of sigmoid terms
    (softmax is invariant to it). So when ``not cfg.uses_logit_bias`` the bias receives no gradient at
    all and must be frozen (``configure_scalars``) or DDP reports an unused parameter;
    :func:`~mmclip_plugin.losses.check_scalars` raises before training if it is not.

    Args:
        cfg: which terms, kinds and weights.
        rank: this process's rank.
        world_size: number of processes (features are gathered when ``cfg.gather`` and > 1).
    """

    def __init__(self, cfg: LossConfig, rank: int = 0, world_size: int = 1):
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"HardNegativeLoss: rank={rank} must lie in [0, world_size={world_size})")
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.kinds: dict[str, PairLoss] = {term: get_loss(kind) for term, kind in cfg.active_terms.items()}
        self.register_buffer("kind_weights", torch.tensor(cfg.kind_weight_vector, dtype=torch.float32), persistent=False)

    @property
    def gathering(self) -> bool:
        return self.cfg.gather and self.world_size > 1

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
        *,
        neg_image_features: torch.Tensor | None = None,
        neg_image_mask: torch.Tensor | None = None,
        neg_text_features: torch.Tensor | None = None,
        neg_text_mask: torch.Tensor | None = None,
        neg_text_kind: torch.Tensor | None = None,
        pair_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the configured terms.

        Args:
            image_features: (B, D) normalised image embeddings of this rank.
            text_features: (B, D) normalised caption embeddings, row i describes image i.
            logit_scale: already-exponentiated scale (scalar tensor).
            logit_bias: scalar tensor or None; added to sigmoid logits only.
            neg_image_features: (B, Ki, D) image negatives of each caption.
            neg_image_mask: (B, Ki) bool, True = real negative (padding False); None = all real.
            neg_text_features: (B, Kt, D) caption negatives of each image.
            neg_text_mask: (B, Kt) bool, True = real negative; None = all real.
            neg_text_kind: (B, Kt) long indices into ``KIND_NAMES`` for ``cfg.text_kind_weights``.
            pair_ids: (B, 2) long, an id of each sample's caption text and of its image file. With
                ``cfg.drop_false_negatives``, an in-batch entry whose caption or image is the row's own
                (two samples sharing a caption, or an image) is a false negative and is left out of the
                row. None: every entry but the positive is a negative.

        Returns:
            ``"loss"`` (weighted sum of the active terms), each active term's unweighted value under its
            name, and detached diagnostics ``"i2t_hard_acc"`` / ``"t2i_hard_acc"``: the fraction of rows
            with at least one real negative whose positive scores above all of them (present when the
            corresponding negatives are given and some row has one).
        """
        cfg = self.cfg
        b, d = _check_pair(image_features, text_features)
        neg_image_mask = _check_negatives("neg_image", neg_image_features, neg_image_mask, b, d)
        neg_text_mask = _check_negatives("neg_text", neg_text_features, neg_text_mask, b, d)
        neg_text_weight = self._text_weights(neg_text_features, neg_text_kind)

        out: dict[str, torch.Tensor] = {}
        if "in_batch" in self.kinds:
            out["in_batch"] = self._in_batch(
                self.kinds["in_batch"], image_features, text_features, logit_scale, logit_bias,
                neg_image_features if cfg.negclip_columns else None, neg_image_mask,
                neg_text_features if cfg.negclip_columns else None, neg_text_mask, neg_text_weight,
                pair_ids if cfg.drop_false_negatives else None,
            )
        if "image_negatives" in self.kinds:
            if neg_image_features is None:
                raise ValueError(f"loss.image_negatives={cfg.image_negatives!r} is on but forward got no neg_image_features")
            # each caption against [its image, its Ki image negatives]
            out["image_negatives"] = self._hard(
                self.kinds["image_negatives"], text_features, image_features, neg_image_features, neg_image_mask,
                None, logit_scale, logit_bias,
            )
        if "text_negatives" in self.kinds:
            if neg_text_features is None:
                raise ValueError(f"loss.text_negatives={cfg.text_negatives!r} is on but forward got no neg_text_features")
            # each image against [its caption, its Kt caption negatives]
            out["text_negatives"] = self._hard(
                self.kinds["text_negatives"], image_features, text_features, neg_text_features, neg_text_mask,
                neg_text_weight, logit_scale, logit_bias,
            )
        weighted = [out[t] if (w := getattr(cfg, f"{t}_weight")) == 1.0 else w * out[t] for t in self.kinds]
        out["loss"] = sum(weighted[1:], weighted[0])  # python sum: terms may differ in dtype under autocast
        for key, anchors, positives, negatives, mask in (
            ("i2t_hard_acc", image_features, text_features, neg_text_features, neg_text_mask),
            ("t2i_hard_acc", text_features, image_features, neg_image_features, neg_image_mask),
        ):
            acc = hard_accuracy(anchors, positives, negatives, mask)
            if acc is not None:
                out[key] = acc
        return out

    # --------------------------------------------------------------------------------------------- terms
    def _hard(
        self,
        kind: PairLoss,
        anchors: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
        mask: torch.Tensor,
        weight: torch.Tensor | None,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """Mean over the B rows of ``kind`` on [positive, K negatives] per anchor."""
        pos = (anchors * positives).sum(-1, keepdim=True)  # (B, 1)
        neg = torch.einsum("bd,bkd->bk", anchors, negatives)  # (B, K)
        logits = logit_scale * torch.cat([pos, neg], dim=1)  # (B, 1 + K)
        if kind.uses_logit_bias and logit_bias is not None:
            logits = logits + logit_bias
        head = torch.ones(mask.shape[0], 1, dtype=torch.bool, device=mask.device)
        valid = torch.cat([head, mask], dim=1)
        if weight is not None:
            weight = torch.cat([head.to(weight.dtype), weight], dim=1)
        target = torch.zeros(anchors.shape[0], dtype=torch.long, device=anchors.device)
        rows = kind.row_losses(logits, target, valid, weight, reduction=self.cfg.hard_sigmoid_reduction)
        return rows.mean()

    def _in_batch(
        self,
        kind: PairLoss,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None,
        neg_images: torch.Tensor | None,
        neg_image_mask: torch.Tensor | None,
        neg_texts: torch.Tensor | None,
        neg_text_mask: torch.Tensor | None,
        neg_text_weight: torch.Tensor | None,
        pair_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """In-batch term, with the hard negatives as extra columns when given (NegCLIP)."""
        b = image_features.shape[0]
        if self.gathering:
            all_images = gather_features(image_features)  # (WB, D)
            all_texts = gather_features(text_features)
            offset = self.rank * b
        else:
            all_images, all_texts, offset = image_features, text_features, 0
        if kind.symmetric_in_batch and self.gathering and not self.cfg.local_loss:
            image_rows, text_rows, offset = all_images, all_texts, 0  # the full matrix on every rank
        else:
            image_rows, text_rows = image_features, text_features
        target = offset + torch.arange(image_rows.shape[0], device=image_rows.device)
        false_negatives = self._false_negatives(pair_ids, target)  # (R, WB) or None

        text_cols, text_valid, text_weight = self._columns(all_texts, neg_texts, neg_text_mask, neg_text_weight)
        i2t = logit_scale * image_rows @ text_cols.T  # (R, WB [+ WB*Kt])
        if kind.uses_logit_bias and logit_bias is not None:
            i2t = i2t + logit_bias
        i2t_rows = kind.row_losses(i2t, target, _row_valid(text_valid, false_negatives, i2t), _expand(text_weight, i2t))

        t2i_rows = None
        if kind.symmetric_in_batch:
            image_cols, image_valid, _ = self._columns(all_images, neg_images, neg_image_mask, None)
            t2i = logit_scale * text_rows @ image_cols.T  # (R, WB [+ WB*Ki])
            t2i_rows = kind.row_losses(t2i, target, _row_valid(image_valid, false_negatives, t2i))
        elif neg_images is not None:
            # sigmoid: this rank's image negatives are extra rows scored -1 against every caption
            k = neg_images.shape[1]
            extra = logit_scale * neg_images.reshape(b * k, neg_images.shape[2]) @ all_texts.T  # (B*Ki, WB)
            if kind.uses_logit_bias and logit_bias is not None:
                extra = extra + logit_bias
            no_target = torch.full((b * k,), -1, dtype=torch.long, device=extra.device)
            extra_valid = neg_image_mask.reshape(b * k, 1).expand_as(extra)
            i2t_rows = torch.cat([i2t_rows, kind.row_losses(extra, no_target, extra_valid)])
        return kind.in_batch(i2t_rows, t2i_rows, num_positives=b)

    def _false_negatives(self, pair_ids: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor | None:
        """(R, WB) bool: column j shares its caption or its image with row r's sample (and is not r's positive).

        Caption j is then as true of image r as of its own image (or image j is image r), so ranking it
        below the positive would teach a contradiction; the relation is symmetric, so both directions of
        the in-batch term use the same matrix.
        """
        if pair_ids is None:
            return None
        if pair_ids.dim() != 2 or pair_ids.shape[1] != 2:
            raise ValueError(f"pair_ids must be (B, 2) caption and image ids, got {tuple(pair_ids.shape)}")
        all_ids = gather_no_grad(pair_ids) if self.gathering else pair_ids  # (WB, 2)
        if all_ids.shape[0] <= int(target.max()):
            raise ValueError(f"pair_ids has {pair_ids.shape[0]} rows; expected one per sample of the batch")
        rows = all_ids[target]  # (R, 2): the rows' own samples
        same = (rows[:, None, :] == all_ids[None, :, :]).any(dim=-1)  # (R, WB)
        same[torch.arange(target.shape[0], device=target.device), target] = False
        return same

    def _columns(
        self,
        positives: torch.Tensor,
        negatives: torch.Tensor | None,
        mask: torch.Tensor | None,
        weight: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Columns [positives, flattened negatives] and their (N,) validity and weight (None = all 1)."""
        if negatives is None:
            return positives, None, None
        if self.gathering:
            gathered = _gather_padded(negatives, mask, weight)
            if gathered is None:  # no rank has a negative
                return positives, None, None
            negatives, mask, weight = gathered
        n, k = negatives.shape[:2]
        cols = torch.cat([positives, negatives.reshape(n * k, negatives.shape[2])], dim=0)
        head = torch.ones(positives.shape[0], dtype=torch.bool, device=cols.device)
        valid = torch.cat([head, mask.reshape(-1)])
        if weight is not None:
            weight = torch.cat([head.to(weight.dtype), weight.reshape(-1)])
        return cols, valid, weight

    def _text_weights(self, neg_text_features: torch.Tensor | None, neg_text_kind: torch.Tensor | None) -> torch.Tensor | None:
        """(B, Kt) per-negative kind weights, or None when every weight is 1."""
        if neg_text_features is None:
            return None
        all_one = all(w == 1.0 for w in self.cfg.kind_weight_vector)
        if neg_text_kind is None:
            if not all_one:
                raise ValueError(
                    f"loss.text_kind_weights={self.cfg.text_kind_weights} needs neg_text_kind (indices into {KIND_NAMES})"
                )
            return None
        if neg_text_kind.shape != neg_text_features.shape[:2]:
            raise ValueError(
                f"neg_text_kind must be (B, Kt)={tuple(neg_text_features.shape[:2])}, got {tuple(neg_text_kind.shape)}"
            )
        # range check on CPU only: on an accelerator it would synchronise, and indexing asserts there anyway
        if neg_text_kind.device.type == "cpu" and neg_text_kind.numel() and (int(neg_text_kind.min()) < 0 or int(neg_text_kind.max()) >= len(KIND_NAMES)):
            raise ValueError(f"neg_text_kind values must index KIND_NAMES={KIND_NAMES} (0..{len(KIND_NAMES) - 1})")
        if all_one:
            return None
        return self.kind_weights.to(neg_text_features.device)[neg_text_kind].to(neg_text_features.dtype)


def hard_accuracy(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None, mask: torch.Tensor | None
) -> torch.Tensor | None:
    """Fraction of rows with a real negative whose positive beats all of its real negatives (detached).

    Returns None when there are no negatives or no row has a real one.
    """
    if negatives is None or negatives.shape[1] == 0:
        return None
    with torch.no_grad():
        pos = (anchors * positives).sum(-1)  # (B,)
        neg = torch.einsum("bd,bkd->bk", anchors, negatives)  # (B, K)
        if mask is not None:
            neg = neg.masked_fill(~mask, float("-inf"))
            has = mask.any(dim=1)
        else:
            has = torch.ones_like(pos, dtype=torch.bool)
        if not bool(has.any()):
            return None
        return (pos > neg.max(dim=1).values)[has].float().mean()


def _expand(column_values: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    return None if column_values is None else column_values[None, :].expand_as(logits)


def _row_valid(column_valid: torch.Tensor | None, false_negatives: torch.Tensor | None,
               logits: torch.Tensor) -> torch.Tensor | None:
    """(R, C) validity of in-batch entries: the columns' own validity, minus the false negatives.

    ``false_negatives`` covers the first WB columns (the batch's positives); NegCLIP columns after them
    keep their own validity.
    """
    valid = _expand(column_valid, logits)
    if false_negatives is None:
        return valid
    keep = ~false_negatives
    if logits.shape[1] > keep.shape[1]:
        keep = torch.cat([keep, keep.new_ones(keep.shape[0], logits.shape[1] - keep.shape[1])], dim=1)
    return keep if valid is None else valid & keep


def _gather_padded(
    negatives: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """Gather (B, K, D) negatives across ranks, padding K to the largest K of any rank (mask False).

    Every rank must call this (collectives); returns None when K is 0 on every rank.
    """
    k = negatives.shape[1]
    k_max = int(gather_no_grad(torch.tensor([k], device=negatives.device)).max())
    if k_max == 0:
        return None
    if k < k_max:
        pad = k_max - k
        negatives = torch.cat([negatives, negatives.new_zeros(negatives.shape[0], pad, negatives.shape[2])], dim=1)
        mask = torch.cat([mask, mask.new_zeros(mask.shape[0], pad)], dim=1)
        if weight is not None:
            weight = torch.cat([weight, weight.new_ones(weight.shape[0], pad)], dim=1)
    # weights are gathered only when they exist on this rank; they derive from the config, equal everywhere
    weight = None if weight is None else gather_no_grad(weight)
    return gather_features(negatives), gather_no_grad(mask), weight


def _check_pair(image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[int, int]:
    if image_features.dim() != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            "image_features and text_features must both be (B, D); got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    return image_features.shape[0], image_features.shape[1]


def _check_negatives(
    name: str, features: torch.Tensor | None, mask: torch.Tensor | None, b: int, d: int
) -> torch.Tensor | None:
    """Validate (B, K, D) negatives and return their (B, K) bool mask (all True when None)."""
    if features is None:
        if mask is not None:
            raise ValueError(f"{name}_mask given without {name}_features")
        return None
    if features.dim() != 3 or features.shape[0] != b or features.shape[2] != d:
        raise ValueError(f"{name}_features must be (B={b}, K, D={d}), got {tuple(features.shape)}")
    if mask is None:
        return torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
    if mask.shape != features.shape[:2]:
        raise ValueError(f"{name}_mask must be (B, K)={tuple(features.shape[:2])}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{name}_mask must be a bool tensor (True = real negative), got {mask.dtype}")
    return mask
