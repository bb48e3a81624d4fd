"""Two gloo processes on the halves of a global batch reproduce one process on the whole batch.

Each rank returns a loss whose mean over ranks is the single-process loss; its local gradients (summed
across ranks by the all_gather backward) are ``world_size`` times the single-process gradients of its
slice, i.e. exactly what DDP's gradient averaging turns into the single-process gradients.
"""
from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmclip_plugin.distributed import (
    DistEnv,
    all_reduce_mean,
    destroy_distributed,
    gather_features,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    read_torchrun_env,
)
from mmclip_plugin.losses import KIND_NAMES, HardNegativeLoss, LossConfig

WORLD = 2
B_LOCAL, D, K_MAX = 4, 8, 3
FEATURE_KEYS = ("image_features", "text_features", "neg_image_features", "neg_text_features")

CASES = {
    "softmax": dict(in_batch="softmax", image_negatives=None, text_negatives=None),
    "softmax-local-loss": dict(in_batch="softmax", image_negatives=None, text_negatives=None, local_loss=True),
    "sigmoid": dict(in_batch="sigmoid", image_negatives=None, text_negatives=None),
    "softmax-keep-false-negatives": dict(in_batch="softmax", image_negatives=None, text_negatives=None,
                                         drop_false_negatives=False),
    "softmax-all-terms-negclip": dict(
        in_batch="softmax", image_negatives="sigmoid", text_negatives="softmax", negclip_columns=True,
        text_kind_weights={"rule": 2.0, "retrieval": 0.5},
    ),
    "sigmoid-all-terms-negclip-local": dict(
        in_batch="sigmoid", image_negatives="softmax", text_negatives="sigmoid", negclip_columns=True, local_loss=True,
    ),
}


def _global_batch() -> dict[str, torch.Tensor]:
    """A global batch of WORLD * B_LOCAL samples; rank 1's samples have one negative fewer of each kind."""
    gen = torch.Generator().manual_seed(7)
    n = WORLD * B_LOCAL

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=gen, dtype=torch.float64), dim=-1)

    data = {
        "image_features": unit(n, D),
        "text_features": unit(n, D),
        "neg_image_features": unit(n, K_MAX, D),
        "neg_text_features": unit(n, K_MAX, D),
        "neg_image_mask": torch.rand(n, K_MAX, generator=gen) < 0.8,
        "neg_text_mask": torch.rand(n, K_MAX, generator=gen) < 0.8,
        "neg_text_kind": torch.randint(0, len(KIND_NAMES), (n, K_MAX), generator=gen),
    }
    # caption and image ids: samples 1 (rank 0) and 6 (rank 1) share a caption, samples 2 and 3 an image
    ids = torch.arange(2 * n, dtype=torch.long).reshape(n, 2)
    ids[6, 0], ids[3, 1] = ids[1, 0], ids[2, 1]
    data["pair_ids"] = ids
    data["neg_image_mask"][B_LOCAL:, K_MAX - 1] = False  # what rank 1 does not have
    data["neg_text_mask"][B_LOCAL:, K_MAX - 1] = False
    return data


def _local_batch(data: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    rows = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
    k = K_MAX if rank == 0 else K_MAX - 1  # ranks disagree on K: NegCLIP gathering must pad
    local = {}
    for key, value in data.items():
        value = value[rows]
        local[key] = value[:, :k] if value.dim() >= 2 and key.startswith("neg_") else value
    return local


def _run(cfg: LossConfig, batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    leaves = {k: batch[k].clone().requires_grad_(True) for k in FEATURE_KEYS}
    scale = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    rest = {k: v for k, v in batch.items() if k not in FEATURE_KEYS}
    out = HardNegativeLoss(cfg, rank=rank, world_size=world)(
        leaves["image_features"], leaves["text_features"], scale, bias,
        neg_image_features=leaves["neg_image_features"], neg_text_features=leaves["neg_text_features"], **rest,
    )
    out["loss"].backward()
    result = {"loss": out["loss"].detach(), "scale_grad": scale.grad, "bias_grad": bias.grad}
    result.update({f"{k}_grad": leaves[k].grad for k in FEATURE_KEYS})
    return result


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    environ = {"RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank)}
    env = init_distributed(backend="gloo", init_method=f"file://{init_file}", environ=environ)
    try:
        assert env == DistEnv(rank=rank, world_size=WORLD, local_rank=rank, backend="gloo")
        assert is_distributed() and get_rank() == rank and get_world_size() == WORLD
        assert float(all_reduce_mean(torch.tensor(float(rank)))) == (WORLD - 1) / 2
        x = torch.full((2, 3), float(rank), requires_grad=True)
        gathered = gather_features(x)
        (gathered * torch.arange(1, 5.0)[:, None]).sum().backward()
        results = {"gather": gathered.detach(), "gather_grad": x.grad}
        batch = _local_batch(_global_batch(), rank)
        for name, kwargs in CASES.items():
            results[name] = _run(LossConfig(**kwargs), batch, rank, WORLD)
        empty = {k: v[:, :0] if k.startswith("neg_") else v for k, v in batch.items()}
        for kind in ("softmax", "sigmoid"):
            cfg = dict(in_batch=kind, image_negatives=None, text_negatives=None)
            results[f"{kind}-negclip-no-negatives"] = _run(LossConfig(**cfg, negclip_columns=True), empty, rank, WORLD)
            results[f"{kind}-plain"] = _run(LossConfig(**cfg), batch, rank, WORLD)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        destroy_distributed()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.distributed
def test_gather_features_concatenates_in_rank_order_and_sums_gradients(rank_results):
    expected = torch.cat([torch.full((2, 3), float(r)) for r in range(WORLD)])
    for r, res in enumerate(rank_results):
        torch.testing.assert_close(res["gather"], expected)
        # every rank's loss weighs slice r by its rows' factors; the backward sums both ranks' gradients
        factors = torch.arange(1, 5.0)[r * 2 : (r + 1) * 2, None].expand(2, 3)
        torch.testing.assert_close(res["gather_grad"], WORLD * factors)


@pytest.mark.distributed
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_equal_one_process(rank_results, case):
    cfg = LossConfig(**CASES[case])
    data = _global_batch()
    single = _run(cfg, data, rank=0, world=1)
    per_rank = [res[case] for res in rank_results]
    torch.testing.assert_close(torch.stack([r["loss"] for r in per_rank]).mean(), single["loss"], atol=1e-10, rtol=1e-9)
    for key in ("scale_grad", "bias_grad"):
        if single[key] is None:
            assert all(r[key] is None for r in per_rank), f"{key} is used on some rank but not in one process"
            continue
        torch.testing.assert_close(sum(r[key] for r in per_rank) / WORLD, single[key], atol=1e-10, rtol=1e-9)
    for key in FEATURE_KEYS:
        if single[f"{key}_grad"] is None:
            assert all(r[f"{key}_grad"] is None for r in per_rank), f"{case}: {key} gets a gradient only on ranks"
            continue
        for rank, res in enumerate(per_rank):
            rows = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
            expected = single[f"{key}_grad"][rows]
            got = res[f"{key}_grad"] / WORLD
            if key.startswith("neg_"):
                k = got.shape[1]
                assert torch.all(expected[:, k:] == 0)  # the column rank 1 lacks gets nothing in one process either
                expected = expected[:, :k]
            torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-9, msg=f"{case}: d loss / d {key}, rank {rank}")


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_negclip_columns_without_negatives_on_any_rank(rank_results, kind):
    """K = 0 on every rank: gathering skips the empty columns and the loss is the plain in-batch loss."""
    for res in rank_results:
        empty, plain = res[f"{kind}-negclip-no-negatives"], res[f"{kind}-plain"]
        torch.testing.assert_close(empty["loss"], plain["loss"], atol=1e-12, rtol=0)
        torch.testing.assert_close(empty["image_features_grad"], plain["image_features_grad"], atol=1e-12, rtol=0)


def test_torchrun_environment_parsing():
    assert read_torchrun_env({}) == DistEnv(rank=0, world_size=1, local_rank=0)
    assert read_torchrun_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == DistEnv(3, 4, 1)
    with pytest.raises(ValueError, match="RANK='x' must be an integer"):
        read_torchrun_env({"RANK": "x"})
    with pytest.raises(ValueError, match="RANK=4, WORLD_SIZE=4"):
        read_torchrun_env({"RANK": "4", "WORLD_SIZE": "4"})
    single = init_distributed(environ={})
    assert single == DistEnv() and not is_distributed() and get_rank() == 0 and get_world_size() == 1
    x = torch.ones(2, requires_grad=True)
    assert gather_features(x) is x
