"""pytest set-up for the whole project (tests/ and notebooks/): the smoke setting nbval runs notebook 04 with.

nbval cannot inject parameters, so notebook 04 reads SPINE_SMOKE_EPOCHS and trains for that many epochs, and
writes to SPINE_SMOKE_OUTPUT_DIR instead of its default output_dir, so `make test` never replaces the model,
metrics and predictions of a real `make run`; here, at the root, it applies however pytest is started
(`pytest`, `pytest notebooks/04_train_unet.ipynb`).
"""
import os
from pathlib import Path

os.environ.setdefault("SPINE_SMOKE_EPOCHS", "2")
os.environ.setdefault("SPINE_SMOKE_OUTPUT_DIR", str(Path(__file__).parent / "outputs" / "smoke" / "04_train_unet"))
