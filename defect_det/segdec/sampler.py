"""Training samplers (Detectron2-compatible: infinite index streams, sharded by rank).

:class:`FrequencyOfUseSampler` is SegDecNet's frequency-of-use sampling of negatives
(``DATALOADER.SAMPLER_TRAIN: "FrequencyOfUseSampler"``; :class:`~defect_det.engine.DefectTrainer`
builds it from the training dataset dicts' ``label``).
"""
import itertools
import math
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
from torch.utils.data.sampler import Sampler

from detectron2.utils import comm

__all__ = ["FREQUENCY_MODES", "FrequencyOfUseSampler", "frequency_of_use_probabilities"]


def frequency_of_use_probabilities(counts: np.ndarray) -> np.ndarray:
    """
    Sampling probabilities of the negatives from their use counts (N_neg,):
    ``p = 1 - counts / max(counts)``; ``p = p - median(p) + 1``; ``p = p ** (4 ln N_neg)``;
    normalised. Rarely used negatives get (much) larger probabilities. Uniform when all counts are
    equal (including all zero).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = len(counts)
    top = counts.max() if n else 0.0
    if top <= 0:
        return np.full(n, 1.0 / n) if n else counts
    p = 1.0 - counts / top
    p = p - np.median(p) + 1.0
    p = p ** (4.0 * math.log(n))
    # keep every negative drawable (sampling without replacement needs enough nonzero entries);
    # the floor is 1e-12 of the largest probability, so it never changes which ones are favoured
    p = np.maximum(p, 1e-12 * p.max())
    return p / p.sum()


FREQUENCY_MODES = ("balanced", "paper")


class FrequencyOfUseSampler(Sampler):
    """
    An infinite stream of dataset indices, epoch after epoch. Each epoch holds every positive
    (``label`` 1) once and ``min(N_pos, N_neg)`` negatives (every negative if there is no positive),
    in random order. The epoch's negatives are drawn without replacement: uniformly in the first
    epoch, afterwards from how often each negative has been used so far:

    - ``mode="paper"``: by :func:`frequency_of_use_probabilities` (the authors' soft scheme). It
      strongly favours rarely used negatives but does not guarantee equal use: after some epochs
      counts can differ by 2-3 (measured: 15 epochs, 3 positives, 10 negatives).
    - ``mode="balanced"`` (default): the least-used negatives first, ties broken at random, i.e.
      the limit of that scheme as its exponent grows. After every epoch the use counts of the
      negatives differ by at most 1.

    Like ``detectron2.data.samplers.TrainingSampler``: the global stream is the same on every rank
    (shared seed) and rank ``r`` of ``w`` takes items ``r, r + w, ...``; inside DataLoader workers
    Detectron2's ``ToIterableDataset`` shards it further.
    """

    def __init__(self, labels: Sequence[int], seed: Optional[int] = None, mode: str = "balanced"):
        """
        Args:
            labels: image-level label (0/1) of every dataset index.
            seed: shared by all ranks; None = ``comm.shared_random_seed()``.
            mode: "balanced" or "paper" (class doc).
        """
        if mode not in FREQUENCY_MODES:
            raise ValueError(f"FrequencyOfUseSampler: mode must be one of {FREQUENCY_MODES}, got {mode!r}")
        self.mode = mode
        labels = np.asarray([int(x) for x in labels])
        if labels.size == 0:
            raise ValueError("FrequencyOfUseSampler: the dataset is empty")
        bad = np.flatnonzero((labels != 0) & (labels != 1))
        if bad.size:
            raise ValueError(f"FrequencyOfUseSampler: labels must be 0/1; index {int(bad[0])} has "
                             f"{int(labels[bad[0]])}")
        self.positives = np.flatnonzero(labels == 1)
        self.negatives = np.flatnonzero(labels == 0)
        self.negatives_per_epoch = (min(len(self.positives), len(self.negatives))
                                    if len(self.positives) else len(self.negatives))
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    @classmethod
    def from_dataset_dicts(cls, dataset_dicts: Sequence[Dict], seed: Optional[int] = None,
                           mode: str = "balanced"):
        labels = []
        for i, d in enumerate(dataset_dicts):
            if "label" not in d:
                raise ValueError(f"FrequencyOfUseSampler needs an image-level 'label' (0/1) in every "
                                 f"dataset dict; dict {i} ({d.get('file_name')}) has none")
            labels.append(d["label"])
        return cls(labels, seed=seed, mode=mode)

    def __len__(self):
        """Indices per epoch (the stream itself is infinite)."""
        return len(self.positives) + self.negatives_per_epoch

    def epochs(self) -> Iterator[List[int]]:
        """The global (unsharded) epochs, each a list of dataset indices."""
        rng = np.random.default_rng(self._seed)
        counts = np.zeros(len(self.negatives), dtype=np.int64)
        k = self.negatives_per_epoch
        for epoch in itertools.count():
            if k == len(self.negatives):
                chosen = np.arange(k)
            elif epoch == 0:
                chosen = rng.choice(len(self.negatives), size=k, replace=False)
            elif self.mode == "balanced":
                order = rng.permutation(len(self.negatives))
                chosen = order[np.argsort(counts[order], kind="stable")[:k]]
            else:
                chosen = rng.choice(len(self.negatives), size=k, replace=False,
                                    p=frequency_of_use_probabilities(counts))
            counts[chosen] += 1
            indices = np.concatenate([self.positives, self.negatives[chosen]])
            yield rng.permutation(indices).tolist()

    def __iter__(self):
        stream = itertools.chain.from_iterable(self.epochs())
        yield from itertools.islice(stream, self._rank, None, self._world_size)
