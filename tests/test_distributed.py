"""Training on several workers (MultiWorkerMirroredStrategy, TF_CONFIG): each worker's shard of the train names,
its place in the cluster, the local-worker launcher, and two local CPU workers training together to identical
weights."""
import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
from conftest import CLI
from synthetic import write_dataset

from maskpair.cli import notebooks as notebooks_cli
from maskpair.cli import train as train_cli
from maskpair.data.files import natural_key
from maskpair.training import fit, train
from maskpair.training import model as unet
from maskpair.training.config import TrainConfig

tf = unet.tf


def test_shards_are_every_nth_name_in_natural_order_disjoint_and_together_the_split():
    names = ["10", "2", "1", "7", "3", "11", "5"]
    shards = [train.shard_names(names, 3, k) for k in range(3)]
    assert shards == [["1", "5", "11"], ["2", "7"], ["3", "10"]]
    assert [train.shard_names(names[::-1], 3, k) for k in range(3)] == shards  # whatever order a machine lists
    assert sorted(sum(shards, []), key=natural_key) == sorted(names, key=natural_key)
    assert train.shard_names(names, 1, 0) == sorted(names, key=natural_key)
    with pytest.raises(ValueError, match=r"worker must be in 0\.\.2, got 3"):
        train.shard_names(names, 3, 3)


def test_cluster_position_numbers_the_chief_first():
    def position(cluster, task_type, task_id):
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
        return train.cluster_position(types.SimpleNamespace(cluster_resolver=resolver))

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}
    assert position(workers, "worker", 0) == (0, 3) and position(workers, "worker", 2) == (2, 3)
    with_chief = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]}
    assert position(with_chief, "chief", 0) == (0, 3) and position(with_chief, "worker", 1) == (2, 3)
    assert train.cluster_position(tf.distribute.get_strategy()) == (0, 1)


def test_the_global_batch_divides_among_replicas_or_fails_clearly():
    assert train.replica_batch_size(4, 2) == 2
    with pytest.raises(ValueError, match="batch size 4 does not divide among 3 replicas"):
        train.replica_batch_size(4, 3)


def test_local_tf_configs_describe_one_cluster_on_distinct_loopback_ports():
    configs = [json.loads(text) for text in train_cli.local_tf_configs(3)]
    cluster = configs[0]["cluster"]
    assert all(c["cluster"] == cluster for c in configs) and [c["task"] for c in configs] == [
        {"type": "worker", "index": k} for k in range(3)]
    assert len(set(cluster["worker"])) == 3 and all(a.startswith("127.0.0.1:") for a in cluster["worker"])


def test_local_workers_run_train_with_the_settings_given_and_no_local_workers_option():
    args = argparse.Namespace(command="train", data_dir=Path("data"), out=Path("out"), local_workers=2,
                              backbone="vgg16", crop=None, decoder_filters=(16, 8), learning_rate=0.5)
    command = train_cli.worker_command(args)
    assert command[1:] == ["-m", "maskpair", "train", "data", "--out", "out", *command[7:]]
    given = {option: notebooks_cli.parse_value(text) for option, text in zip(command[7::2], command[8::2])}
    assert given == {"--backbone": "vgg16", "--crop": None, "--decoder-filters": (16, 8), "--learning-rate": 0.5}


# a stand-in worker: reports its TF_CONFIG index; worker 1 fails at once when told to, worker 0 then waits long
STAND_IN = textwrap.dedent("""
    import json, os, sys, time
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    print("index", index, "pid", os.getpid(), flush=True)
    if sys.argv[1] == "fail" and index == 1:
        sys.exit(3)
    if sys.argv[1] == "fail":
        time.sleep(120)
""")


def test_local_workers_all_run_and_the_others_lines_are_prefixed(capfd):
    assert train_cli.run_local_workers([sys.executable, "-c", STAND_IN, "ok"], 3) == 0
    out = capfd.readouterr().out
    assert re.search(r"^index 0 pid \d+$", out, re.M)
    assert re.search(r"^\[worker 1\] index 1 pid", out, re.M) and re.search(r"^\[worker 2\] index 2 pid", out, re.M)


def test_a_failing_local_worker_stops_the_others_and_fails_the_run(capfd):
    start = time.monotonic()
    assert train_cli.run_local_workers([sys.executable, "-c", STAND_IN, "fail"], 2) == 1
    assert time.monotonic() - start < 60  # worker 0 would have slept 120 s
    captured = capfd.readouterr()
    assert "worker 1 failed (exit code 3); the other workers were stopped" in captured.err
    chief = int(re.search(r"^index 0 pid (\d+)$", captured.out, re.M).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(chief, 0)


@pytest.mark.slow
def test_two_local_workers_train_one_epoch_to_identical_weights_on_disjoint_shards(tmp_path):
    data_dir = write_dataset(tmp_path / "data", [str(i) for i in range(20)], shape=(32, 32))
    out = tmp_path / "out"
    # vgg16: the fewest layers of the encoders, so tracing the distributed step takes half of resnet18's time;
    # its decoder keeps batch normalisation, whose statistics workers read collectively
    settings = {"epochs": 1, "crop": None, "passes_per_epoch": 1, "largest_structure": "off", "flip_average": False,
                "backbone": "vgg16"}
    options = [text for name, value in settings.items() for text in (f"--{name.replace('_', '-')}", str(value))]
    result = subprocess.run([*CLI, "train", str(data_dir), "--out", str(out),
                             "--local-workers", "2", *options], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    done = {int(k): (int(size), digest) for k, size, digest in re.findall(
        r"^(?:\[worker \d\] )?worker (\d) of 2 done: trained on its shard of (\d+) train examples, "
        r"weights sha256 ([0-9a-f]{64})", result.stdout, re.M)}
    assert set(done) == {0, 1} and done[0][1] == done[1][1], result.stdout  # both finished, identical weights

    metrics = json.loads((out / "metrics.json").read_text())
    splits = train.plan_splits(data_dir, TrainConfig(**settings))
    shards = metrics["shards"]
    assert metrics["workers"] == 2 and set(shards) == {"0", "1"}
    assert not set(shards["0"]) & set(shards["1"])
    assert sorted(shards["0"] + shards["1"], key=natural_key) == splits["train"]
    assert [done[k][0] for k in (0, 1)] == [len(shards["0"]), len(shards["1"])]  # each trained on its own shard
    assert metrics["dataset"]["splits"]["train"] == len(splits["train"]) and metrics["config"]["batch_size"] == 4
    # the chief's saved model is the weights both workers reported
    assert metrics["weights_sha256"] == done[0][1]
    assert fit.weights_digest(unet.load_model(out / "model" / "model.keras").get_weights()) == done[0][1]
    # only the chief wrote into --out: no other worker's checkpoint folder is left there
    assert (out / "checkpoints" / "best.weights.index").is_file() and not list(out.rglob("workertemp*"))
    assert {path.stem for path in (out / "predictions").glob("*.npy")} == set(splits["test"])
