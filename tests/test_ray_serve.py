"""``crosswalk serve --ray``: the Ray Serve application answers like the in-process Predictor, on a local Ray.

Ray takes ~5 s to start and ~4 s to stop here and ~0.6 GB of memory, so one module-scoped deployment serves
every check. Timeouts are generous (the 2 cores are shared) and fail with a message rather than hanging.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from crosswalk.cli import build_parser
from crosswalk.infer import Predictor
from crosswalk.scenes import render_frame
from crosswalk.serve.ray_app import (
    RayServeConfig,
    config_from_args,
    deployment_options,
    free_port,
    running_ray_server,
)


def test_deployment_options_choose_fixed_replicas_or_autoscaling() -> None:
    fixed = deployment_options(RayServeConfig(replicas=2, max_batch=4))
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["max_ongoing_requests"] == 8
    scaled = deployment_options(RayServeConfig(replicas=1, max_replicas=3, max_batch=4))
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 4,
    }
    with pytest.raises(ValueError):
        RayServeConfig(replicas=0)


def test_serve_flags_map_onto_the_ray_config() -> None:
    args = build_parser().parse_args(["serve", "--ray", "--replicas", "0", "--max-batch", "4", "--port", "0"])
    cfg = config_from_args(args)
    assert (cfg.replicas, cfg.max_batch, cfg.port, cfg.max_delay_ms) == (1, 4, 0, args.max_delay_ms)


@pytest.fixture(scope="module")
def ray_url(tmp_path_factory):
    cfg = RayServeConfig(port=free_port(), max_batch=4, max_delay_ms=20.0, threads=1, cpus_per_replica=1.0)
    with running_ray_server(
        None, cfg, num_cpus=2, temp_dir=tmp_path_factory.mktemp("ray"), ready_timeout_s=180
    ) as url:
        yield url


def test_ray_serve_answers_like_the_in_process_predictor(ray_url: str) -> None:
    jpegs = [render_frame(7, i)[0] for i in range(3)]
    expected = Predictor(threads=1).predict(jpegs)
    with httpx.Client(base_url=ray_url, timeout=120) as client:

        def post(body: bytes, content_type: str = "image/jpeg", params: dict | None = None) -> httpx.Response:
            return client.post(
                "/v1/detect", content=body, headers={"content-type": content_type}, params=params
            )

        with ThreadPoolExecutor(len(jpegs)) as pool:  # concurrent, so @serve.batch can group them
            responses = list(pool.map(post, jpegs))
        for response, want in zip(responses, expected, strict=True):
            assert response.status_code == 200, response.text
            got = response.json()["detections"]
            assert [d["class"] for d in got] == [d["class"] for d in want]
            np.testing.assert_allclose([d["box"] for d in got], [d["box"] for d in want], atol=0.05)
            np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in want], atol=1e-4)
        assert sum(len(w) for w in expected) > 0  # the frames do hold detections to compare

        only = post(jpegs[0], params={"classes": "vehicle", "min_score": "0.5"}).json()["detections"]
        assert all(d["class"] == "vehicle" and d["score"] >= 0.5 for d in only)
        assert post(b"not an image").status_code == 400
        assert post(jpegs[0], params={"classes": "dog"}).status_code == 400
        assert post(jpegs[0], content_type="text/plain").status_code == 415
        assert client.get("/v1/detect").status_code == 405
        assert post(jpegs[0]).status_code == 200  # still serving after the bad requests
