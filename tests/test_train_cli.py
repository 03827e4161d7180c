"""`crosswalk train`, `eval`, `model info` and `bench train` through the real CLI, on tiny inputs."""

import json

import pytest

from conftest import write_tiny_dataset
from crosswalk.cli import main

TINY = [
    "steps=2",
    "batch_size=4",
    "image_size=64x48",
    "warmup_steps=1",
    "workers=0",
    "threads=1",
    "width_mult=0.125",
    "log_every=1",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli_train")
    data = write_tiny_dataset(base / "d", n=12)
    assert main(["train", "--data", str(data), "--out", str(base / "run"), *TINY]) == 0
    return base / "run", data


def test_eval_writes_json_and_plots(run, tmp_path, capsys):
    folder, data = run
    out, plots = tmp_path / "eval.json", tmp_path / "plots"
    assert (
        main(
            [
                "eval",
                str(folder),
                "--data",
                str(data),
                "--json",
                str(out),
                "--plots",
                str(plots),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    for key in ("map50", "map", "per_class", "pedestrian_mr", "by_condition"):
        assert key in results
    assert set(results["pedestrian_mr"]) == {"reasonable", "small", "heavy", "all"}
    assert len(list(plots.glob("*.png"))) >= 3
    assert "pedestrian MR-2" in capsys.readouterr().out


def test_unknown_key_fails_listing_valid_ones(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "learnig_rate=1"]) == 2
    assert "valid keys" in capsys.readouterr().err


def test_model_info(capsys):
    assert main(["model", "info", "--preset", "nano", "--size", "128x72"]) == 0
    assert "M params" in capsys.readouterr().out


def test_bench_train_keys(run, tmp_path):
    _, data = run
    out = tmp_path / "bench_train.json"
    assert (
        main(
            [
                "bench",
                "train",
                str(data),
                "--json",
                str(out),
                "--batch-size",
                "4",
                "--steps",
                "2",
                "--repeats",
                "1",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    for key in (
        "train_images_per_s",
        "compute_only_images_per_s",
        "ratio",
        "data_wait_fraction",
        "params",
        "gflops_per_image",
    ):
        assert r[key] is not None
    assert "mfu" in r
