"""TrainConfig is the one source of training defaults: the command line and notebook 04 follow it."""
import argparse

import pytest

from maskpair.cli import train as train_cli
from maskpair.training.config import TrainConfig


def test_lists_become_tuples_and_to_dict_is_json_ready():
    config = TrainConfig(decoder_filters=[64, 32, 16, 8, 4], train_without_flags=["empty_mask"])
    assert config.decoder_filters == (64, 32, 16, 8, 4) and config == config.replace()
    assert config.to_dict()["decoder_filters"] == [64, 32, 16, 8, 4]
    assert set(config.to_dict()) == {f for f in TrainConfig.__dataclass_fields__}


def test_replace_refuses_unknown_settings_and_bad_values():
    with pytest.raises(TypeError, match="no setting epoch "):
        TrainConfig().replace(epoch=3)
    with pytest.raises(ValueError, match="largest_structure"):
        TrainConfig(largest_structure="yes")
    with pytest.raises(ValueError, match='mixed_precision must be "auto", "float16", "bfloat16" or "off"'):
        TrainConfig(mixed_precision="on")
    with pytest.raises(ValueError, match="jit_compile must be True or False"):
        TrainConfig(jit_compile="yes")


def test_command_line_options_are_the_config_fields():
    parser = argparse.ArgumentParser()
    train_cli.add_config_arguments(parser)
    args = parser.parse_args(["--epochs", "3", "--crop", "None", "--decoder-filters", "[8,8,8,8,8]", "--backbone", "resnet34"])
    config = train_cli.config_from_arguments(args)
    assert config == TrainConfig(epochs=3, crop=None, decoder_filters=(8, 8, 8, 8, 8), backbone="resnet34")
    assert train_cli.config_from_arguments(parser.parse_args([])) == TrainConfig()


def test_precision_settings_name_keras_policies_and_auto_follows_the_device(monkeypatch):
    from maskpair.training import model

    assert [model.precision_policy(s) for s in ("float16", "bfloat16", "off")] == [
        "mixed_float16", "mixed_bfloat16", "float32"]
    monkeypatch.setattr(model, "gpu_present", lambda: True)
    assert model.precision_policy("auto") == "mixed_float16"
    monkeypatch.setattr(model, "gpu_present", lambda: False)
    assert model.precision_policy("auto") == "float32"
    with pytest.raises(ValueError, match="mixed_precision must be"):
        model.precision_policy("on")
