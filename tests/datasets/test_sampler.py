"""Bucket and per-sample samplers: even split across ranks, reproducible epochs, exact resume."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
import pytest

from opensora.datasets.bucket import Assignment, Bucket, BucketId
from opensora.datasets.sampler import BucketBatchSampler, StatefulDistributedSampler, dataset_fingerprint
from opensora.errors import OpenSoraError

BUCKETS = {"144p": {1: (1.0, 4), 17: (1.0, 3), 34: (1.0, 2)}, "240p": {17: (1.0, 2)}}


def make_metadata(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = [(144, 256), (256, 144), (240, 426), (192, 192), (480, 854)]
    height, width = zip(*(sizes[i] for i in rng.integers(0, len(sizes), n)))
    frames = rng.choice([1, 20, 40, 80], n)
    return pd.DataFrame(
        {"path": [f"/data/v{i}.mp4" for i in range(n)], "num_frames": frames, "height": height, "width": width}
    )


def make_sampler(metadata: pd.DataFrame | None = None, config: dict = BUCKETS, **kwargs) -> BucketBatchSampler:
    return BucketBatchSampler(Bucket(config), make_metadata() if metadata is None else metadata, **kwargs)


def run_epoch(sampler, epoch: int) -> list:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_ranks_get_equal_disjoint_single_bucket_batches() -> None:
    bucket = Bucket(BUCKETS)
    per_rank = [run_epoch(make_sampler(num_replicas=3, rank=r), 0) for r in range(3)]
    assert len({len(batches) for batches in per_rank}) == 1 and len(per_rank[0]) > 3
    seen = []
    for batches in per_rank:
        for batch in batches:
            ids = {bucket_id for _, bucket_id in batch}
            assert len(ids) == 1
            assert len(batch) == bucket.batch_size(ids.pop())
            seen.extend(index for index, _ in batch)
    assert len(seen) == len(set(seen)), "two ranks saw the same sample in one epoch"
    assignment = make_sampler().assignment()
    for index, bucket_id in itertools.chain.from_iterable(itertools.chain.from_iterable(per_rank)):
        assert assignment.buckets[assignment.bucket_index[index]] == bucket_id


def test_epochs_differ_but_are_reproducible() -> None:
    first, again = make_sampler(seed=3), make_sampler(seed=3)
    epoch0, epoch1 = run_epoch(first, 0), run_epoch(first, 1)
    assert epoch0 == run_epoch(again, 0)
    assert epoch1 == run_epoch(again, 1)
    assert epoch0 != epoch1
    assert run_epoch(make_sampler(seed=4), 0) != epoch0
    assert len(first) == len(epoch1)


def test_pad_keeps_every_assigned_sample() -> None:
    sampler = make_sampler(num_replicas=1, drop_last=False)
    batches = run_epoch(sampler, 0)
    assignment = sampler.assignment()
    kept = set(np.flatnonzero(assignment.bucket_index >= 0).tolist())
    assert {index for batch in batches for index, _ in batch} == kept
    bucket = Bucket(BUCKETS)
    assert all(len(batch) == bucket.batch_size(batch[0][1]) for batch in batches)


@pytest.mark.parametrize("num_replicas, drop_last", [(1, True), (2, True), (3, False)])
def test_resume_mid_epoch_reproduces_the_rest(num_replicas: int, drop_last: bool) -> None:
    for rank in range(num_replicas):
        kwargs = dict(num_replicas=num_replicas, rank=rank, seed=7, drop_last=drop_last)
        full = run_epoch(make_sampler(**kwargs), 2)
        interrupted = make_sampler(**kwargs)
        interrupted.set_epoch(2)
        head = list(itertools.islice(iter(interrupted), 5))
        state = interrupted.state_dict()
        resumed = make_sampler(**{**kwargs, "seed": 0})  # the checkpoint's seed wins
        resumed.load_state_dict(state)
        resumed.set_epoch(2)  # a trainer re-entering the saved epoch keeps the position
        assert len(resumed) == len(full) - 5
        assert head + list(resumed) == full
        assert run_epoch(resumed, 3) == run_epoch(make_sampler(**kwargs), 3)


def test_resume_with_fewer_ranks_covers_the_rest_of_the_epoch() -> None:
    two = [make_sampler(num_replicas=2, rank=r) for r in range(2)]
    heads = [list(itertools.islice(iter(s), 4)) for s in two]
    single = make_sampler()
    single.load_state_dict(two[0].state_dict())
    rest = list(single)
    whole = run_epoch(make_sampler(), 0)
    used = [batch for head in heads for batch in head]
    assert sorted(map(repr, used + rest)) == sorted(map(repr, whole[: len(used) + len(rest)]))


def test_yielded_override_accounts_for_prefetch() -> None:
    sampler = make_sampler()
    iterator = iter(sampler)
    fetched = [next(iterator) for _ in range(6)]  # a DataLoader fetched 6, the trainer used 4
    resumed = make_sampler()
    resumed.load_state_dict(sampler.state_dict(yielded=4))
    assert list(resumed)[:2] == fetched[4:]


def test_finished_epoch_resumes_to_nothing_and_replays_in_process() -> None:
    sampler = make_sampler()
    full = list(sampler)
    resumed = make_sampler()
    resumed.load_state_dict(sampler.state_dict())
    assert len(resumed) == 0 and list(resumed) == []
    assert list(sampler) == full  # iterating a finished epoch again replays it, as torch samplers do


def test_changed_dataset_fails_in_one_line_unless_restart(caplog: pytest.LogCaptureFixture) -> None:
    sampler = make_sampler()
    next(iter(sampler))
    state = sampler.state_dict()
    changed = make_metadata(seed=1)
    with pytest.raises(OpenSoraError, match="dataset changed since the checkpoint .*restart_epoch=True") as info:
        make_sampler(changed).load_state_dict(state)
    assert "\n" not in str(info.value)
    with pytest.raises(OpenSoraError, match="dataset changed"):
        make_sampler(make_metadata(n=10)).load_state_dict(state)
    restarted = make_sampler(changed, restart_epoch=True)
    with caplog.at_level(logging.WARNING):
        restarted.load_state_dict(state)
    assert "restarting epoch 0" in caplog.text
    assert list(restarted) == run_epoch(make_sampler(changed), 0)


def test_changed_bucket_config_fails() -> None:
    sampler = make_sampler()
    state = sampler.state_dict()
    other = {**BUCKETS, "240p": {17: (1.0, 4)}}
    with pytest.raises(OpenSoraError, match="bucket config changed"):
        make_sampler(config=other).load_state_dict(state)


def test_epoch_dependent_assignment_is_redrawn() -> None:
    sampler = make_sampler(config={"144p": {17: (0.5, 2), 34: (0.5, 2)}})
    kept = [set(np.flatnonzero(sampler.assignment(epoch).bucket_index >= 0).tolist()) for epoch in range(2)]
    assert kept[0] != kept[1]
    first = run_epoch(sampler, 1)
    assert {i for batch in first for i, _ in batch} <= kept[1]
    static = make_sampler()
    assert np.array_equal(static.assignment(0).bucket_index, static.assignment(5).bucket_index)


class FakeBucket:
    """The minimal protocol: a batch size per bucket and a config hash."""

    def batch_size(self, bucket: BucketId) -> int:
        return bucket.num_frames

    def config_hash(self) -> str:
        return "fake"


def test_precomputed_assignment_and_bad_arguments() -> None:
    buckets = [BucketId("144p", 2, "1.00"), BucketId("144p", 3, "1.00")]
    assignment = Assignment(np.array([0, 1, -1, 0, 1, 1, 0, 0, 1]), np.array([""] * 9), buckets)
    batches = list(BucketBatchSampler(FakeBucket(), assignment=assignment))
    assert sorted(len(b) for b in batches) == [2, 2, 3]
    with pytest.raises(ValueError, match="exactly one"):
        BucketBatchSampler(FakeBucket())
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler(FakeBucket(), assignment=assignment, num_replicas=2, rank=2)
    with pytest.raises(OpenSoraError, match="num_frames"):
        BucketBatchSampler(Bucket(BUCKETS), pd.DataFrame({"path": ["a.mp4"]}))


def test_fingerprint_ignores_dataset_location() -> None:
    meta = make_metadata(5)
    moved = meta.assign(path=meta["path"].str.replace("/data/", "/mnt/elsewhere/"))
    assert dataset_fingerprint(meta) == dataset_fingerprint(moved)
    assert dataset_fingerprint(meta) != dataset_fingerprint(meta.assign(num_frames=meta["num_frames"] + 1))


@pytest.mark.parametrize("drop_last", [True, False])
def test_distributed_sampler_split_and_resume(drop_last: bool) -> None:
    n, replicas = 23, 4

    def make(rank: int, **kwargs) -> StatefulDistributedSampler:
        return StatefulDistributedSampler(n, replicas, rank, seed=1, drop_last=drop_last, dataset_hash="h", **kwargs)

    per_rank = [run_epoch(make(r), 0) for r in range(replicas)]
    assert {len(indices) for indices in per_rank} == {n // replicas if drop_last else -(-n // replicas)}
    flat = [i for indices in per_rank for i in indices]
    assert set(flat) <= set(range(n))
    if drop_last:
        assert len(flat) == len(set(flat))
    else:
        assert set(flat) == set(range(n))
    assert run_epoch(make(0), 1) != per_rank[0] and run_epoch(make(0), 1) == run_epoch(make(0), 1)
    for rank in range(replicas):
        interrupted = make(rank)
        iterator = iter(interrupted)
        head = [next(iterator) for _ in range(3)]
        resumed = make(rank)
        resumed.load_state_dict(interrupted.state_dict())
        assert head + list(resumed) == per_rank[rank]


def test_distributed_sampler_detects_changed_data() -> None:
    sampler = StatefulDistributedSampler(10, dataset_hash="a")
    state = sampler.state_dict()
    with pytest.raises(OpenSoraError, match="10 samples"):
        StatefulDistributedSampler(10, dataset_hash="b").load_state_dict(state)
    with pytest.raises(OpenSoraError, match="dataset changed"):
        StatefulDistributedSampler(11, dataset_hash="a").load_state_dict(state)
    restarted = StatefulDistributedSampler(11, dataset_hash="a", restart_epoch=True)
    restarted.load_state_dict(state)
    assert len(list(restarted)) == 11
    assert list(StatefulDistributedSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_an_epoch_without_full_batches_names_the_buckets():
    from opensora.datasets.bucket import Bucket
    from opensora.errors import ConfigError

    bucket = Bucket({"240p": {17: (1.0, 8)}})
    metadata = pd.DataFrame({"path": [f"v{i}.mp4" for i in range(3)], "num_frames": [40] * 3,
                             "height": [240] * 3, "width": [426] * 3})  # fmt: skip
    sampler = BucketBatchSampler(bucket, metadata, num_replicas=1, rank=0)
    with pytest.raises(ConfigError, match=r"no full batch in any bucket: 240p/17/0\.56 has 3 < batch size 8"):
        list(sampler)
