"""pytest set-up for the whole project (tests/ and notebooks/): the smoke setting nbval runs notebook 04 with.

nbval cannot inject parameters, so notebook 04 reads SPINE_SMOKE_EPOCHS and trains for that many epochs;
here, at the root, it applies however pytest is started (`pytest`, `pytest notebooks/04_train_unet.ipynb`).
"""
import os

os.environ.setdefault("SPINE_SMOKE_EPOCHS", "2")
