"""Parity of HardNegativeLoss with open_clip's ClipLoss / SigLipLoss and with per-sample Python references."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss

from mmclip_plugin.losses import (
    KIND_NAMES,
    HardNegativeLoss,
    LossConfig,
    PairLoss,
    check_scalars,
    configure_scalars,
    get_loss,
    hard_accuracy,
    list_losses,
    register_loss,
)
from mmclip_plugin.losses.reference import reference_loop_loss

DT = torch.float64
ATOL = 1e-10
B, D = 7, 16


def _unit(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=gen, dtype=DT), dim=-1)


@pytest.fixture()
def batch():
    """Leaf tensors: features, negatives with ragged masks (one row without any negative), kinds, scalars."""
    gen = torch.Generator().manual_seed(1234)
    ki, kt = 4, 5
    data = {
        "image_features": _unit(B, D, gen=gen),
        "text_features": _unit(B, D, gen=gen),
        "logit_scale": torch.tensor(math.log(1 / 0.07), dtype=DT).exp(),
        "logit_bias": torch.tensor(-2.5, dtype=DT),
        "neg_image_features": _unit(B, ki, D, gen=gen),
        "neg_text_features": _unit(B, kt, D, gen=gen),
    }
    for v in data.values():
        v.requires_grad_(True)
    neg_image_mask = torch.rand(B, ki, generator=gen) < 0.7
    neg_image_mask[0] = False  # a caption without any image negative
    neg_image_mask[1] = True
    neg_text_mask = torch.rand(B, kt, generator=gen) < 0.7
    neg_text_mask[2] = False
    neg_text_mask[3] = True
    data["neg_image_mask"] = neg_image_mask
    data["neg_text_mask"] = neg_text_mask
    data["neg_text_kind"] = torch.randint(0, len(KIND_NAMES), (B, kt), generator=gen)
    return data


GRAD_KEYS = ("image_features", "text_features", "logit_scale", "logit_bias", "neg_image_features", "neg_text_features")


def _grads(loss: torch.Tensor, data: dict) -> dict[str, torch.Tensor]:
    leaves = [data[k] for k in GRAD_KEYS]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return {k: (torch.zeros_like(v) if g is None else g) for k, v, g in zip(GRAD_KEYS, leaves, grads)}


def _assert_same(ours: torch.Tensor, ref: torch.Tensor, data: dict) -> None:
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=1e-9)
    g_ours, g_ref = _grads(ours, data), _grads(ref, data)
    for key in GRAD_KEYS:
        torch.testing.assert_close(g_ours[key], g_ref[key], atol=ATOL, rtol=1e-9, msg=f"gradient w.r.t. {key}")


# ------------------------------------------------------------------------------------------------ registry
def test_registry_lists_both_kinds_and_rejects_unknown_and_duplicates():
    assert {"softmax", "sigmoid"} <= set(list_losses())
    with pytest.raises(ValueError, match="unknown loss 'hinge'; known: sigmoid, softmax"):
        get_loss("hinge")
    with pytest.raises(ValueError, match="already registered"):

        @register_loss("softmax")
        class Again(PairLoss):
            def row_losses(self, logits, target, valid=None, weight=None, reduction="sum"):
                return logits.sum(1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"in_batch": "hinge"}, r"key 'in_batch': expected null or one of \['sigmoid', 'softmax'\]"),
        ({"text_negatives_weight": -1.0}, "key 'text_negatives_weight': expected a number >= 0"),
        ({"in_batch": None, "image_negatives": None, "text_negatives": None}, "at least one term"),
        ({"in_batch": None, "image_negatives_weight": 0.0, "text_negatives": None}, "at least one term"),
        ({"text_kind_weights": {"synonym": 1.0}}, "key 'text_kind_weights': expected one of .*got 'synonym'"),
        ({"text_kind_weights": {"rule": -2.0}}, "key 'text_kind_weights.rule': expected a number >= 0"),
        ({"in_batch": None, "negclip_columns": True}, "negclip_columns"),
        ({"hard_sigmoid_reduction": "max"}, "hard_sigmoid_reduction"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**kwargs)


@pytest.mark.parametrize(
    "terms, uses_bias",
    [
        (("softmax", None, None), False),
        (("sigmoid", None, None), True),
        (("softmax", None, "softmax"), False),
        (("softmax", "sigmoid", "softmax"), True),
        ((None, None, "sigmoid"), True),
    ],
)
def test_uses_logit_bias(terms, uses_bias):
    cfg = LossConfig(in_batch=terms[0], image_negatives=terms[1], text_negatives=terms[2])
    assert cfg.uses_logit_bias is uses_bias
    assert LossConfig(text_kind_weights={"rule": 3.0}).text_kind_weights == {"perturbation": 1.0, "rule": 3.0, "retrieval": 1.0}


# ------------------------------------------------------------------------------------------ open_clip parity
@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("with_unused_negatives", [False, True])
def test_in_batch_matches_open_clip(batch, kind, with_unused_negatives):
    """Hard terms off (and negatives, if passed, not used as columns): value and gradients equal open_clip's."""
    cfg = LossConfig(in_batch=kind, image_negatives=None, text_negatives=None)
    extra = {}
    if with_unused_negatives:
        extra = {k: batch[k] for k in ("neg_image_features", "neg_image_mask", "neg_text_features", "neg_text_mask")}
    out = HardNegativeLoss(cfg)(
        batch["image_features"], batch["text_features"], batch["logit_scale"], batch["logit_bias"], **extra
    )
    assert set(out) >= {"loss", "in_batch"} and "image_negatives" not in out and "text_negatives" not in out
    if kind == "softmax":
        ref = ClipLoss()(batch["image_features"], batch["text_features"], batch["logit_scale"])
    else:
        ref = SigLipLoss()(batch["image_features"], batch["text_features"], batch["logit_scale"], batch["logit_bias"])
    _assert_same(out["loss"], ref, batch)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_zero_negatives_add_nothing_to_in_batch(batch, kind):
    """K = 0 negatives with NegCLIP columns on is still exactly open_clip's loss."""
    cfg = LossConfig(in_batch=kind, image_negatives=None, text_negatives=None, negclip_columns=True)
    empty = batch["image_features"].new_zeros(B, 0, D)
    out = HardNegativeLoss(cfg)(
        batch["image_features"], batch["text_features"], batch["logit_scale"], batch["logit_bias"],
        neg_image_features=empty, neg_text_features=empty,
    )
    ref_cls = ClipLoss() if kind == "softmax" else SigLipLoss()
    args = (batch["logit_bias"],) if kind == "sigmoid" else ()
    ref = ref_cls(batch["image_features"], batch["text_features"], batch["logit_scale"], *args)
    _assert_same(out["loss"], ref, batch)


# -------------------------------------------------------------------------------- per-sample hard references
def _ref_row(kind: str, pos: torch.Tensor, negs: list[torch.Tensor], weights: list[float], scale, bias, reduction: str):
    """One row, written the obvious way: the positive and its real negatives one by one."""
    if kind == "softmax":
        denom = torch.exp(scale * pos) + sum(w * torch.exp(scale * n) for n, w in zip(negs, weights))
        return -(scale * pos - torch.log(denom))
    terms = [-F.logsigmoid(scale * pos + bias)] + [-w * F.logsigmoid(-(scale * n + bias)) for n, w in zip(negs, weights)]
    total = sum(terms)
    if reduction == "mean":
        total = total / (1 + sum(1 for w in weights if w > 0))
    return total


def _ref_hard(kind, anchors, positives, negatives, mask, kinds, kind_weights, scale, bias, reduction):
    rows = []
    for i in range(anchors.shape[0]):
        pos = anchors[i] @ positives[i]
        negs, weights = [], []
        for k in range(negatives.shape[1]):
            if not mask[i, k]:
                continue
            w = 1.0 if kinds is None else kind_weights[KIND_NAMES[int(kinds[i, k])]]
            if w == 0:
                continue
            negs.append(anchors[i] @ negatives[i, k])
            weights.append(w)
        rows.append(_ref_row(kind, pos, negs, weights, scale, bias, reduction))
    return torch.stack(rows).mean()


@pytest.mark.parametrize("image_kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("text_kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_hard_terms_match_per_sample_reference(batch, image_kind, text_kind, reduction):
    kind_weights = {"perturbation": 1.0, "rule": 2.5, "retrieval": 0.0}
    cfg = LossConfig(
        in_batch=None, image_negatives=image_kind, text_negatives=text_kind, image_negatives_weight=0.7,
        text_negatives_weight=1.3, text_kind_weights=kind_weights, hard_sigmoid_reduction=reduction,
    )
    out = HardNegativeLoss(cfg)(**batch)
    s, b = batch["logit_scale"], batch["logit_bias"]
    ref_img = _ref_hard(image_kind, batch["text_features"], batch["image_features"], batch["neg_image_features"],
                        batch["neg_image_mask"], None, kind_weights, s, b, reduction)
    ref_txt = _ref_hard(text_kind, batch["image_features"], batch["text_features"], batch["neg_text_features"],
                        batch["neg_text_mask"], batch["neg_text_kind"], kind_weights, s, b, reduction)
    torch.testing.assert_close(out["image_negatives"], ref_img, atol=ATOL, rtol=1e-9)
    torch.testing.assert_close(out["text_negatives"], ref_txt, atol=ATOL, rtol=1e-9)
    _assert_same(out["loss"], 0.7 * ref_img + 1.3 * ref_txt, batch)


def test_matches_the_reference_loop_loss(batch):
    """Our sigmoid image term (reduction 'sum') and softmax text term equal the reference's per-sample loops."""
    cfg = LossConfig(in_batch=None, image_negatives="sigmoid", text_negatives="softmax", hard_sigmoid_reduction="sum")
    keys = ("image_features", "text_features", "logit_scale", "logit_bias", "neg_image_features", "neg_text_features")
    args = {k: batch[k] for k in keys}
    ours = HardNegativeLoss(cfg)(**args)
    ref = reference_loop_loss(**args)
    torch.testing.assert_close(ours["image_negatives"], ref["image_negatives"], atol=ATOL, rtol=1e-9)
    torch.testing.assert_close(ours["text_negatives"], ref["text_negatives"], atol=ATOL, rtol=1e-9)
    _assert_same(ours["loss"], ref["loss"], batch)


def test_padding_is_ignored(batch):
    """Changing the features behind padded (mask False) slots changes neither the loss nor the real gradients."""
    cfg = LossConfig(in_batch="sigmoid", image_negatives="sigmoid", text_negatives="softmax", negclip_columns=True)
    loss = HardNegativeLoss(cfg)
    first = loss(**batch)["loss"]
    moved = dict(batch)
    noise = torch.randn_like(batch["neg_text_features"]) * (~batch["neg_text_mask"])[..., None]
    moved["neg_text_features"] = (batch["neg_text_features"] + noise).detach().requires_grad_(True)
    second = loss(**moved)["loss"]
    torch.testing.assert_close(first, second, atol=ATOL, rtol=1e-9)
    g = torch.autograd.grad(first, batch["neg_text_features"])[0]
    assert torch.all(g[~batch["neg_text_mask"]] == 0)
    assert g[batch["neg_text_mask"]].abs().sum() > 0


# ---------------------------------------------------------------------------------------------- NegCLIP
def _ref_negclip(kind, data, kind_weights):
    """In-batch loss with the real hard negatives appended as extra columns, row by row."""
    img, txt, s, bias = data["image_features"], data["text_features"], data["logit_scale"], data["logit_bias"]
    neg_txt = [(data["neg_text_features"][i, k], kind_weights[KIND_NAMES[int(data["neg_text_kind"][i, k])]])
               for i in range(B) for k in range(data["neg_text_features"].shape[1]) if data["neg_text_mask"][i, k]]
    neg_img = [data["neg_image_features"][i, k]
               for i in range(B) for k in range(data["neg_image_features"].shape[1]) if data["neg_image_mask"][i, k]]
    if kind == "softmax":
        i2t, t2i = [], []
        for i in range(B):
            cols = [(txt[j], 1.0) for j in range(B)] + neg_txt
            logits = torch.stack([s * (img[i] @ c) + math.log(w) if w > 0 else img.new_tensor(-math.inf) for c, w in cols])
            i2t.append(-torch.log_softmax(logits, 0)[i])
            cols = [img[j] for j in range(B)] + neg_img
            t2i.append(-torch.log_softmax(torch.stack([s * (txt[i] @ c) for c in cols]), 0)[i])
        return (torch.stack(i2t).mean() + torch.stack(t2i).mean()) / 2
    total = 0.0
    for i in range(B):
        for j in range(B):
            label = 1.0 if i == j else -1.0
            total = total - F.logsigmoid(label * (s * (img[i] @ txt[j]) + bias))
        for c, w in neg_txt:
            total = total - w * F.logsigmoid(-(s * (img[i] @ c) + bias))
    for n in neg_img:
        for j in range(B):
            total = total - F.logsigmoid(-(s * (n @ txt[j]) + bias))
    return total / B


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_negclip_columns_match_reference(batch, kind):
    kind_weights = {"perturbation": 1.0, "rule": 2.0, "retrieval": 0.5}
    cfg = LossConfig(in_batch=kind, image_negatives=None, text_negatives=None, negclip_columns=True,
                     text_kind_weights=kind_weights)
    out = HardNegativeLoss(cfg)(**batch)
    _assert_same(out["loss"], _ref_negclip(kind, batch, kind_weights), batch)


# ---------------------------------------------------------------------------------------------- scalars
@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_false_negatives_are_left_out_of_the_in_batch_rows(batch, kind):
    """Samples 0 and 4 share a caption, samples 2 and 5 an image: those entries leave their rows."""
    ids = torch.arange(2 * B).reshape(B, 2)
    ids[4, 0], ids[5, 1] = ids[0, 0], ids[2, 1]
    img, txt = batch["image_features"], batch["text_features"]
    scale, bias = batch["logit_scale"], batch["logit_bias"]
    cfg = LossConfig(in_batch=kind, image_negatives=None, text_negatives=None)
    ours = HardNegativeLoss(cfg)(img, txt, scale, bias, pair_ids=ids)["in_batch"]
    same = {(0, 4), (4, 0), (2, 5), (5, 2)}
    logits = scale * img @ txt.T + (bias if kind == "sigmoid" else 0)  # (B, B) image rows, caption columns
    if kind == "softmax":
        rows = []
        for i in range(B):
            keep = [j for j in range(B) if (i, j) not in same]
            i2t = F.cross_entropy(logits[i, keep][None], torch.tensor([keep.index(i)]))
            t2i = F.cross_entropy(logits[keep, i][None], torch.tensor([keep.index(i)]))
            rows.append((i2t, t2i))
        ref = (sum(r[0] for r in rows) / B + sum(r[1] for r in rows) / B) / 2
    else:
        entries = [-F.logsigmoid((1.0 if i == j else -1.0) * logits[i, j])
                   for i in range(B) for j in range(B) if (i, j) not in same]
        ref = sum(entries) / B
    _assert_same(ours, ref, batch)
    kept = HardNegativeLoss(LossConfig(in_batch=kind, image_negatives=None, text_negatives=None,
                                       drop_false_negatives=False))(img, txt, scale, bias, pair_ids=ids)["in_batch"]
    _assert_same(kept, HardNegativeLoss(cfg)(img, txt, scale, bias)["in_batch"], batch)  # ids unused
    with pytest.raises(ValueError, match=r"pair_ids must be \(B, 2\)"):
        HardNegativeLoss(cfg)(img, txt, scale, bias, pair_ids=ids[:, 0])


def test_bias_reaches_only_sigmoid_terms(batch):
    soft = LossConfig(in_batch="softmax", image_negatives="softmax", text_negatives="softmax", negclip_columns=True)
    out = HardNegativeLoss(soft)(**batch)
    g_scale, g_bias = torch.autograd.grad(out["loss"], [batch["logit_scale"], batch["logit_bias"]], allow_unused=True)
    assert g_bias is None and g_scale is not None and g_scale != 0
    for term in ("in_batch", "image_negatives", "text_negatives"):
        for kind in ("softmax", "sigmoid"):
            kinds = {t: (kind if t == term else None) for t in ("in_batch", "image_negatives", "text_negatives")}
            out = HardNegativeLoss(LossConfig(**kinds))(**batch)
            g_scale, g_bias = torch.autograd.grad(out["loss"], [batch["logit_scale"], batch["logit_bias"]], allow_unused=True)
            assert g_scale is not None and g_scale != 0, f"scale unused by {term}={kind}"
            assert (g_bias is not None) == (kind == "sigmoid"), f"bias use of {term}={kind}"


class _Scalars(torch.nn.Module):
    """The scalar part of MMCLIPModel's interface (HasLogitScalars)."""

    def __init__(self, bias: bool):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
        self.logit_bias = torch.nn.Parameter(torch.tensor(-10.0)) if bias else None

    def ensure_logit_bias(self, init=None):
        if self.logit_bias is None:
            self.logit_bias = torch.nn.Parameter(torch.tensor(-10.0 if init is None else init))
        return self.logit_bias


def test_check_and_configure_scalars():
    softmax_only = LossConfig(in_batch="softmax", image_negatives=None, text_negatives="softmax")
    model = _Scalars(bias=True)
    with pytest.raises(ValueError, match="logit_bias is trainable but no active loss term uses it"):
        check_scalars(model, softmax_only)
    configure_scalars(model, softmax_only)
    assert not model.logit_bias.requires_grad
    check_scalars(model, softmax_only)
    with_sigmoid = LossConfig()
    fresh = _Scalars(bias=False)
    configure_scalars(fresh, with_sigmoid, init_bias=-3.0)
    assert fresh.logit_bias.requires_grad and float(fresh.logit_bias.detach()) == -3.0
    check_scalars(fresh, with_sigmoid)


def test_real_model_scalars_are_all_used_or_frozen():
    """With the real MMCLIP wrapper, every trainable scalar receives a gradient from the configured loss."""
    from mmclip_plugin.config import ModelConfig
    from mmclip_plugin.model import create_model

    torch.manual_seed(0)
    model = create_model(ModelConfig())
    for cfg in (LossConfig(in_batch="softmax", image_negatives=None, text_negatives="softmax"), LossConfig()):
        configure_scalars(model, cfg)
        check_scalars(model, cfg)
        model.zero_grad(set_to_none=True)
        images = torch.randn(3, 3, model.image_size, model.image_size)
        tokens = model.tokenize(["a square", "a rhombus", "a kite"])
        img, txt = model.encode_image(images), model.encode_text(tokens)
        neg_txt = model.encode_text(model.tokenize(["a circle", "a line", "a point"]))[:, None]
        out = HardNegativeLoss(cfg)(
            img, txt, model.logit_scale.exp(), model.logit_bias,
            neg_image_features=img.roll(1, 0)[:, None], neg_text_features=neg_txt,
        )
        out["loss"].backward()
        for name in ("logit_scale", "logit_bias"):
            p = getattr(model, name)
            if p is not None and p.requires_grad:
                assert p.grad is not None, f"{name} is trainable but got no gradient under {cfg}"


# ---------------------------------------------------------------------------------------------- outputs
def test_outputs_errors_and_diagnostics(batch):
    out = HardNegativeLoss(LossConfig())(**batch)
    assert set(out) == {"loss", "in_batch", "image_negatives", "text_negatives", "i2t_hard_acc", "t2i_hard_acc"}
    assert not out["i2t_hard_acc"].requires_grad
    for key, anchors, positives, negatives, mask in (
        ("i2t_hard_acc", "image_features", "text_features", "neg_text_features", "neg_text_mask"),
        ("t2i_hard_acc", "text_features", "image_features", "neg_image_features", "neg_image_mask"),
    ):
        wins = []
        for i in range(B):
            real = [batch[negatives][i, k] for k in range(batch[mask].shape[1]) if batch[mask][i, k]]
            if real:
                pos = batch[anchors][i] @ batch[positives][i]
                wins.append(all(pos > batch[anchors][i] @ n for n in real))
        assert float(out[key]) == pytest.approx(sum(wins) / len(wins))
    assert hard_accuracy(batch["image_features"], batch["text_features"], None, None) is None

    with pytest.raises(ValueError, match="no neg_image_features"):
        HardNegativeLoss(LossConfig())(batch["image_features"], batch["text_features"], batch["logit_scale"])
    with pytest.raises(ValueError, match="needs neg_text_kind"):
        HardNegativeLoss(LossConfig(in_batch=None, image_negatives=None, text_kind_weights={"rule": 2.0}))(
            batch["image_features"], batch["text_features"], batch["logit_scale"],
            neg_text_features=batch["neg_text_features"],
        )
    with pytest.raises(ValueError, match=r"neg_image_mask must be \(B, K\)"):
        HardNegativeLoss(LossConfig())(**{**batch, "neg_image_mask": batch["neg_image_mask"][:, :2]})
    with pytest.raises(ValueError, match="must both be"):
        HardNegativeLoss(LossConfig())(**{**batch, "text_features": batch["text_features"][:3]})


def test_bf16_features_run(batch):
    """Mixed precision: bf16 features and fp32 scalars give a finite loss close to the fp64 one."""
    cfg = LossConfig(negclip_columns=True, text_kind_weights={"rule": 2.0})
    ref = HardNegativeLoss(cfg)(**batch)["loss"].detach()
    low = {k: (v.detach().to(torch.bfloat16) if v.is_floating_point() and v.dim() > 0 else v) for k, v in batch.items()}
    low["logit_scale"], low["logit_bias"] = batch["logit_scale"].detach().float(), batch["logit_bias"].detach().float()
    out = HardNegativeLoss(cfg)(**low)["loss"]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out)
    assert float(out) == pytest.approx(float(ref), rel=0.05)
