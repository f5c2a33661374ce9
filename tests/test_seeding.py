"""Named random streams: one per purpose, reproducible, never shared between purposes."""

from __future__ import annotations

import pytest
import torch

from cds import seeding


def test_each_purpose_has_its_own_stream_under_the_same_root():
    seeds = {purpose: seeding.stream_seed(1, purpose) for purpose in seeding.PURPOSES}
    assert len(set(seeds.values())) == len(seeds)
    # training seed 1 and evaluation seed 1 no longer draw the same numbers
    train = torch.rand(5, generator=seeding.generator(1, seeding.TRAIN))
    reference = torch.rand(5, generator=seeding.generator(1, seeding.REFERENCE_TEST))
    assert not torch.equal(train, reference)
    assert seeding.stream_seed(1, seeding.TRAIN) != seeding.stream_seed(2, seeding.TRAIN)
    assert seeding.stream_seed(0, seeding.TRAIN_EVAL, 500) != seeding.stream_seed(
        0, seeding.TRAIN_EVAL, 1000
    )


def test_streams_are_reproducible_and_within_torch_range():
    a = seeding.stream_seed(3, seeding.REFERENCE_VALIDATION)
    assert a == seeding.stream_seed(3, seeding.REFERENCE_VALIDATION)
    assert 0 <= a < 2**63
    assert seeding.stream_seed(3, "scoring:student_K1") != seeding.stream_seed(3, "scoring:teacher")


@pytest.mark.parametrize(
    ("root", "purpose", "message"),
    [
        (-1, seeding.TRAIN, "non-negative"),
        (True, seeding.TRAIN, "non-negative"),
        (0, "trian", "unknown random stream"),
    ],
)
def test_bad_roots_and_purposes_are_refused(root, purpose, message):
    with pytest.raises(ValueError, match=message):
        seeding.stream_seed(root, purpose)
