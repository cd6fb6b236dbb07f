"""captum-fam: Feature Activation Map (FAM) for Captum.

Gradient-free explanations of models that decide by comparing embeddings: few-shot
prototypes, contrastive views, retrieval galleries, face verification.
"""

from captum_fam.attribution import FAM, FeatureActivationMap, combine_activation_maps
from captum_fam.similarity import (
    CallableSimilarity,
    CosineSimilarity,
    DotSimilarity,
    EuclideanSimilarity,
    Similarity,
)
from captum_fam.tokens import TokenLayout

__version__ = "0.1.0"

__all__ = [
    "FAM",
    "CallableSimilarity",
    "CosineSimilarity",
    "DotSimilarity",
    "EuclideanSimilarity",
    "FeatureActivationMap",
    "Similarity",
    "TokenLayout",
    "combine_activation_maps",
]
