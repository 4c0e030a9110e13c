"""The loss's hyperparameters as one immutable value, built once from config.loss.

Every loss entry point (`listwise_itr_loss`, `listwise_loss_of_rows`,
`sharding.global_batch_loss`, the train step) takes a `LossOptions` instead of
a list of keywords. Numeric fields may be traced (e.g. vmapped over a grid of
`tau`); they are validated where the loss uses them, when concrete.

To add an option: a field with a default that keeps today's behaviour, its
choices checked in `__post_init__`, a `config.loss` field read in
`from_config` (with that default for configs saved before it existed), and
the code that uses it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from itr_jax.losses import _validation
from itr_jax.losses.contrastive import PAIRWISE_KINDS
from itr_jax.losses.ranks import RANK_METHODS
from itr_jax.losses.smooth_ndcg import IDCG_MODES
from itr_jax.losses.smooth_ndcg import T2I_RELEVANCE_MODES

# The pairwise (per query row) term; `listwise.pairwise_rows` dispatches on it.
PAIRWISE = PAIRWISE_KINDS
# How a batch's per-row terms become one number; `listwise.listwise_loss_of_rows`.
REDUCTIONS = ("mean",)


@dataclasses.dataclass(frozen=True)
class LossOptions:
  """L = (1 - weight) * L_pairwise + weight * (1 - S-NDCG), and how it is computed.

  Attributes:
    margin: triplet margin alpha.
    tau: S-NDCG temperature of the smooth ranks.
    weight: lambda in [0, 1], the listwise term's share.
    t2i_relevance: "paper" (text queries reuse the image rows of R, as the
      official code) or "transpose" (R.T).
    idcg: "tied" (official) or "sorted" (textbook) ideal DCG.
    rank_method: smooth-rank kernel, "chunked", "sorted" or "auto".
    rsc_snap: snap RSC relevance to a 2^-20 grid (False: raw float32).
    pairwise: the pairwise term, "triplet" (VSE++ hinge), "infonce" (CLIP's
      symmetric cross-entropy) or "sigmoid" (SigLIP), see `losses.contrastive`.
    hardest: triplet over the hardest negative (False: sum over negatives,
      the VSE++ warm-up).
    reduction: per-row terms to a batch value, "mean".
    chunk_size: candidates per chunk of the chunked smooth ranks (None: the
      kernel's default); memory only, not the value.
    logit_scale: log-temperature of "infonce" / "sigmoid": the model's
      learnable parameter, set (traced) by the train step
      (`train_step.logit_options`).
    logit_bias: bias of "sigmoid", set the same way.

  >>> LossOptions(tau=0.02).weight
  0.5
  >>> LossOptions(idcg="best")
  Traceback (most recent call last):
  ...
  ValueError: `idcg` must be one of ('tied', 'sorted'), got 'best'.
  """
  margin: Any = 0.2
  tau: Any = 0.01
  weight: Any = 0.5
  t2i_relevance: str = "paper"
  idcg: str = "tied"
  rank_method: str = "chunked"
  rsc_snap: bool = True
  pairwise: str = "triplet"
  hardest: bool = True
  reduction: str = "mean"
  chunk_size: Optional[int] = None
  logit_scale: Any = 0.0
  logit_bias: Any = 0.0

  def __post_init__(self):
    _validation.check_choice("t2i_relevance", self.t2i_relevance, T2I_RELEVANCE_MODES)
    _validation.check_choice("idcg", self.idcg, IDCG_MODES)
    _validation.check_choice("rank_method", self.rank_method, RANK_METHODS)
    _validation.check_choice("pairwise", self.pairwise, PAIRWISE)
    _validation.check_choice("reduction", self.reduction, REDUCTIONS)
    if not isinstance(self.rsc_snap, bool):
      raise ValueError("rsc_snap must be True (snap RSC relevance to a 2^-20 "
                       "grid) or False (raw float32, as the official code), got "
                       f"{self.rsc_snap!r}.")
    if not isinstance(self.hardest, bool):
      raise ValueError(f"`hardest` must be True or False, got {self.hardest!r}.")
    _validation.check_chunk_size(self.chunk_size)

  def replace(self, **changes) -> "LossOptions":
    """A copy with `changes` applied (e.g. `hardest=False` for the warm-up)."""
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_config(cls, loss_config) -> "LossOptions":
    """The options of `config.loss`; fields a config saved before they existed
    lacks take the behaviour of that time (chunked ranks, snapped RSC)."""
    get = lambda name, default: loss_config.get(name, default)
    return cls(margin=loss_config.margin, tau=loss_config.tau,
               weight=loss_config.weight,
               t2i_relevance=loss_config.t2i_relevance, idcg=loss_config.idcg,
               rank_method=get("rank_method", "chunked"),
               rsc_snap=get("rsc_snap", True),
               pairwise=get("pairwise", "triplet"),
               reduction=get("reduction", "mean"))
