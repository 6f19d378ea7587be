"""Dataset readers: one per published layout, all returning a :class:`DatasetSplit`.

- :func:`load_split` (``"star"``, ``"synthetic"``, ``"agqa"``, ``"nextqa"``, ``"egotaskqa"``)
  and :func:`available_splits`, in :mod:`.registry`;
- the common types :class:`QAExample`, :class:`VideoEvents`, :class:`Event`,
  :class:`DatasetSplit` and the errors :class:`DataLayoutError`, :class:`MissingFileError`;
- frame features: :class:`FeatureStore`, :func:`write_features`, :func:`sample_features`;
- STAR's leaderboard file: :func:`write_star_submission`;
- converters from each benchmark's official release files to these layouts:
  :mod:`glance_focus.data.official` (``train/prepare_data.py``).
"""

from .features import FeatureStore, SampledFeatures, find_features_file, sample_features, write_features
from .registry import DATASETS, available_splits, load_split
from .star import write_star_submission
from .types import DataLayoutError, DatasetSplit, Event, MissingFileError, QAExample, VideoEvents

__all__ = [
    "DATASETS",
    "DataLayoutError",
    "DatasetSplit",
    "Event",
    "FeatureStore",
    "MissingFileError",
    "QAExample",
    "SampledFeatures",
    "VideoEvents",
    "available_splits",
    "find_features_file",
    "load_split",
    "sample_features",
    "write_features",
    "write_star_submission",
]
