"""maskpair: paired, audited, reviewed 2D segmentation data for a Keras UNet.

The public API (importing it starts no TensorFlow):

    from maskpair import DataLoader, DataError, Augment, ReviewLog, TrainConfig

Sub-packages by job: `data` (description, pairing, reading, stores, batches), `audit`, `review`, `training`
(TensorFlow), `label_issues`, `cli` (the `maskpair` command); `evaluate` and `figures` are numpy and matplotlib only.
"""
from maskpair.data.augment import Augment
from maskpair.data.loader import DataLoader
from maskpair.errors import DataError
from maskpair.review.log import ReviewLog
from maskpair.training.config import TrainConfig

__version__ = "0.3.0"
__all__ = ["Augment", "DataError", "DataLoader", "ReviewLog", "TrainConfig", "__version__"]
