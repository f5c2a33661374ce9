"""Named random streams, each derived from a root seed for one purpose.

Every random draw of a run comes from a stream named here: `stream_seed(root, purpose)` spawns
a child of `numpy.random.SeedSequence(root)` keyed by the purpose's name, so two purposes never
share a stream, whatever their roots (seed 1 for training and evaluation seed 1 give unrelated
streams), and adding a purpose leaves the others unchanged.

Two roots: `params.seed` for everything training draws, and `evaluation.seed` for the exam
every version of a model is scored on (its reference sets, noise floor and scoring draws), so
versions trained with different seeds are compared on the same exam.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

#: Training streams (root: params.seed).
INIT = "init"  # network initialisation
TRAIN = "train"  # the trainer's batches
FRAGMENTS = "fragments"  # the CDDS fragment bank
FRAGMENT_REFRESH = "fragment_refresh"  # its rebuilds (`cdds.fragments: refresh`)
TRAIN_EVAL = "train_eval"  # draws of the periodic in-training evaluations
VALIDATION = "validation"  # the plateau rule's draws, the same at every check
DENSITY_PROBE = "density_probe"  # the target stage's finiteness probe
LAPLACE_STARTS = "laplace_starts"  # where the Laplace prior's mode search starts

#: Evaluation streams (root: evaluation.seed).
REFERENCE_VALIDATION = "reference_validation"  # exact samples for every choice
REFERENCE_TEST = "reference_test"  # exact samples for reporting only
TRAINING_REFERENCE = "training_reference"  # exact samples for in-training evaluations
FLOOR = "floor"  # the exact-vs-exact noise floor
SCORING = "scoring"  # prefix: samples and weights of each scored sampler

PURPOSES = frozenset(
    {
        INIT,
        TRAIN,
        FRAGMENTS,
        FRAGMENT_REFRESH,
        TRAIN_EVAL,
        VALIDATION,
        DENSITY_PROBE,
        LAPLACE_STARTS,
        REFERENCE_VALIDATION,
        REFERENCE_TEST,
        TRAINING_REFERENCE,
        FLOOR,
    }
)

#: Torch seeds are taken below 2⁶³.
_MASK = (1 << 63) - 1


def stream_seed(root: int, purpose: str, *index: int) -> int:
    """The seed of stream `purpose` (optionally indexed, e.g. by iteration) under `root`.

    `purpose` is one of `PURPOSES`, or `SCORING` followed by ":" and a sampler label."""
    if isinstance(root, bool) or not isinstance(root, int) or root < 0:
        raise ValueError(f"seed must be a non-negative integer, got {root!r}")
    if purpose not in PURPOSES and not purpose.startswith(SCORING + ":"):
        raise ValueError(f"unknown random stream {purpose!r}")
    key = (zlib.crc32(purpose.encode()), *index)
    state = np.random.SeedSequence(root, spawn_key=key).generate_state(1, dtype=np.uint64)
    return int(state[0]) & _MASK


def generator(
    root: int, purpose: str, *index: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A torch generator on `device`, on stream `purpose` under `root` (see `stream_seed`)."""
    return torch.Generator(device=device).manual_seed(stream_seed(root, purpose, *index))


@contextmanager
def initialisation(root: int) -> Iterator[None]:
    """Draw network initialisations made inside the block from stream `INIT` under `root`.

    torch's layer initialisers draw from the global CPU generator, so it is forked, seeded and
    restored on exit: the caller's global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(stream_seed(root, INIT))
        yield
