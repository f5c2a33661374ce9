"""`logreg_cancer`: Bayesian logistic regression on scikit-learn's bundled breast-cancer data.

Data: 569 points, 30 features standardized to zero mean and unit std, a bias column of ones
prepended (D = 31); labels y ∈ {0, 1} as given. Standard convention p(y = 1 | x, w) = σ(wᵀx),
prior N(0, I) included (docs/methods.md §9; §12, pitfall 13):

    log ρ(w) = Σ_n [y_n·log σ(wᵀx_n) + (1 − y_n)·log σ(−wᵀx_n)] + log N(w; 0, I).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from cds.extras import require
from cds.targets.base import Target


def breast_cancer_design() -> tuple[Tensor, Tensor]:
    """Standardized features with a bias column (569, 31) and labels (569,) as float32."""
    datasets = require("sklearn.datasets", "the logreg targets (their data ship with scikit-learn)")
    data = datasets.load_breast_cancer()
    features = torch.as_tensor(data.data, dtype=torch.float64)
    std = features.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    features = (features - features.mean(dim=0)) / std
    design = torch.cat([torch.ones(len(features), 1, dtype=torch.float64), features], dim=1)
    labels = torch.as_tensor(data.target, dtype=torch.float64)
    return design.to(torch.float32), labels.to(torch.float32)


class BayesianLogisticRegression(Target):
    """Posterior over weights w with a N(0, I) prior and a Bernoulli-logistic likelihood."""

    name = "logreg_cancer"
    box = (-6.0, 6.0)

    def __init__(self) -> None:
        self.design, self.labels = breast_cancer_design()
        self.dim = self.design.shape[1]

    def _log_prob(self, x: Tensor) -> Tensor:
        logits = x @ self.design.to(x).T  # (B, N)
        labels = self.labels.to(x)
        # y·log σ(z) + (1 − y)·log σ(−z) = y·z − softplus(z)
        log_lik = (labels * logits - F.softplus(logits)).sum(dim=1)
        log_prior = -0.5 * x.square().sum(dim=1) - 0.5 * self.dim * math.log(2 * math.pi)
        return log_lik + log_prior

    def _score(self, x: Tensor) -> Tensor:
        design = self.design.to(x)
        residual = self.labels.to(x) - torch.sigmoid(x @ design.T)
        return residual @ design - x
