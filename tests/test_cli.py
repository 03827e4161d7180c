"""The README's data commands, run through the real CLI entry point on tiny inputs."""

import json
import os
import subprocess
import sys

import pytest

from crosswalk.cli import main
from crosswalk.data.shards import ShardReader, read_manifest


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--frames",
                "12",
                "--seed",
                "5",
                "--size",
                "128x72",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    return out


def test_synth_then_verify(synth_dir, capsys):
    assert main(["data", "verify", str(synth_dir), "--quiet"]) == 0
    assert "12 samples verified" in capsys.readouterr().out


def test_same_seed_same_shard_hashes_whatever_the_workers(synth_dir, tmp_path):
    again = tmp_path / "again"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(again),
                "--frames",
                "12",
                "--seed",
                "5",
                "--size",
                "128x72",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    hashes = lambda d: [s["sha256"] for s in read_manifest(d)["shards"]]  # noqa: E731
    assert hashes(again) == hashes(synth_dir)


def test_verify_fails_on_a_flipped_byte_naming_the_shard(synth_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(synth_dir, bad)
    reader = ShardReader(bad)
    shard, key = reader.where(3)
    path = bad / shard
    raw = bytearray(path.read_bytes())
    raw[int(reader.index[3]["image_offset"]) + 50] ^= 0x01
    path.write_bytes(bytes(raw))
    assert main(["data", "verify", str(bad), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{shard}: sample {key}: image bytes fail crc32" in err


def test_inspect_writes_stats_and_montage(synth_dir, tmp_path, capsys):
    montage, stats = tmp_path / "m.png", tmp_path / "s.json"
    assert main(["data", "inspect", str(synth_dir), "--montage", str(montage), "--json", str(stats)]) == 0
    assert montage.stat().st_size > 1000
    assert json.loads(stats.read_text())["frames"] == 12


def test_export_and_reimport_coco(synth_dir, tmp_path):
    coco = tmp_path / "coco" / "instances.json"
    assert main(["data", "export", "--format", "coco", str(synth_dir), "--out", str(coco)]) == 0
    assert main(["data", "import", "--format", "coco", str(coco), "--out", str(tmp_path / "back")]) == 0
    a, b = ShardReader(synth_dir), ShardReader(tmp_path / "back")
    assert [o["box"] for o in a.annotation(0)["objects"]] == [o["box"] for o in b.annotation(0)["objects"]]


def test_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["data", "verify", str(tmp_path / "missing")]) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["data", "import", "--format", "coco", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "bad.json" in err and "Traceback" not in err
    existing = tmp_path / "x"
    assert (
        main(["data", "synth", "--out", str(existing), "--frames", "2", "--size", "64x48", "--workers", "1"])
        == 0
    )
    assert main(["data", "synth", "--out", str(existing), "--frames", "2", "--size", "64x48"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err


def test_bench_data_writes_the_issue_keys(synth_dir, tmp_path):
    out = tmp_path / "bench.json"
    args = ["--seconds", "0.2", "--rounds", "3", "--batch-size", "4"]
    assert main(["bench", "data", str(synth_dir), "--json", str(out), *args]) == 0
    result = json.loads(out.read_text())
    for key in ("synth_frames_per_s", "loader_images_per_s", "decode_limit_images_per_s", "ratio", "workers"):
        assert result[key] > 0
    assert result["ratio"] == pytest.approx(
        result["loader_images_per_s"] / result["decode_limit_images_per_s"], rel=0.01
    )
    limits = [result[f"decode_limit_{d}_images_per_s"] for d in ("simplejpeg", "opencv")]
    assert result["decode_limit_images_per_s"] == max(limits) and len(result["ratio_per_round"]) == 3
    assert result["read_decode_images_per_s"] > 0
    assert result["read_decode_ratio"] == pytest.approx(
        result["read_decode_images_per_s"] / result["decode_limit_images_per_s"], rel=0.01
    )
    assert 0 < result["worker_busy_fraction"] < 1.5 and result["main_process_cores"] > 0


_FAULTS_OF_A_64MB_BLOCK = """
import ctypes, resource, sys
from crosswalk.cliutil import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]

def write_64mb():  # malloc, write every page, free: as a training step does with its activations
    block = libc.malloc(2**26)
    ctypes.memset(block, 1, 2**26)
    libc.free(block)

write_64mb()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
write_64mb()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_freed_memory_is_reused_instead_of_faulted_in_again():
    """The CLI's malloc settings (``keep_freed_memory``): a freed 64 MB block is reused, not faulted in again."""

    def run(mode: str, **env) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS_OF_A_64MB_BLOCK, mode],
            capture_output=True, text=True, check=True, env={**os.environ, **env},
        ).stdout.split()  # fmt: skip
        return out[0], int(out[1])

    pages = 2**26 // 4096
    applied, faults = run("keep")
    assert applied == "True" and faults < pages // 10  # served from the kept heap
    assert run("default")[1] >= pages * 0.9  # glibc's default: a fresh mmap, every page faulted in
    assert run("keep", MALLOC_MMAP_MAX_="65536")[0] == "False"  # the user's own glibc setting wins
