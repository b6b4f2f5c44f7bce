"""Expert trajectories: networks trained on real data, parameters stored at every epoch."""

from galaxy_distill.experts.store import ExpertStore
from galaxy_distill.experts.settings import ExpertSettings
from galaxy_distill.experts.train import train_experts

__all__ = ["ExpertSettings", "ExpertStore", "train_experts"]
