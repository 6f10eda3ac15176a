"""The data: the dataset description, finding and pairing files, reading and validating them, splits, the stores
behind the loader (memory, disk cache, files), batches, augmentation and the example data."""
from maskpair.data.augment import Augment
from maskpair.data.check import check_dataset, format_summary
from maskpair.data.description import IGNORE_INDEX, DatasetDescription
from maskpair.data.fetch import fetch_example_data
from maskpair.data.files import natural_key, pair_files
from maskpair.data.inspection import describe
from maskpair.data.loader import DataLoader
from maskpair.data.reading import (
           image_to_float,
           read_image,
           read_mask_values,
           read_pair,
)
from maskpair.data.splits import (
           SET_ASIDE,
           SPLITS,
           fitting_batch_size,
           kfold_splits,
           split_names,
)

__all__ = ["Augment", "DataLoader", "DatasetDescription", "IGNORE_INDEX", "SET_ASIDE", "SPLITS", "check_dataset",
           "describe", "fetch_example_data", "fitting_batch_size", "format_summary", "image_to_float",
           "kfold_splits", "natural_key", "pair_files", "read_image", "read_mask_values", "read_pair",
           "split_names"]
