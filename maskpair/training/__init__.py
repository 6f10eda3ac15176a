"""Training (TensorFlow): the UNet, its losses, the fit loop, prediction and one whole run. `config` (the
settings) needs no TensorFlow; the other modules start it when imported."""
