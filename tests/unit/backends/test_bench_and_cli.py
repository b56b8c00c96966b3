"""``bench --model`` (raw backend latency) and ``build-engine`` through the command line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from backend_models import sample_images

from agent.bench.backend import percentile, run_backend_bench, summarize
from agent.cli.main import main
from agent.errors import BadInputError
from agent.fileio import write_image


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50.0, 90.0, 99.0)
    assert percentile([7.0], 99) == 7.0
    stats = summarize([10.0, 20.0, 30.0, 40.0], batch=2)
    assert stats["p50_ms"] == 20.0 and stats["mean_ms"] == 25.0 and stats["fps"] == 80.0


def test_backends_are_timed_interleaved_with_a_ratio(model_path):
    report = run_backend_bench(model_path, ["onnxruntime", "opencv"], iterations=3, warmup=1)
    ort, cv = report["backends"]["onnxruntime"], report["backends"]["opencv"]
    for stats in (ort, cv):
        assert stats["iterations"] == 3
        assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
        assert stats["input"] == [1, 3, 416, 416]
    assert ort["providers"] == ["CPUExecutionProvider"] and cv["target"] == "cpu"
    assert report["p50_ratios"] == {"opencv/onnxruntime": round(cv["p50_ms"] / ort["p50_ms"], 2)}
    with pytest.raises(BadInputError, match="twice"):
        run_backend_bench(model_path, ["onnxruntime", "onnxruntime"])


def test_bench_and_build_engine_commands(fake_gpu, model_path, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(model_path), "--backend", "onnxruntime", "--iterations", "2",
                 "--warmup", "0", "--json", str(out)]) == 0
    assert "onnxruntime  batch 1: p50" in capsys.readouterr().out
    report = json.loads(out.read_text())  # one benchmark: its report is the whole file
    assert report["backends"]["onnxruntime"]["iterations"] == 2

    engine = tmp_path / "model.engine"
    args = ["build-engine", str(model_path), "-o", str(engine), "--fp16", "--nms", "--max-det", "50"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "engine written:" in printed and "fp16" in printed and "EfficientNMS" in printed
    assert main(["bench", "--model", str(engine), "--backend", "tensorrt", "--iterations", "2"]) == 0
    assert "tensorrt     batch 1: p50" in capsys.readouterr().out
    write_image(tmp_path / "scene.png", sample_images()[-1])
    assert main(["detect", "--model", str(engine), "--quiet", "--json", str(tmp_path / "d.json"),
                 str(tmp_path / "scene.png")]) == 0
    (record,) = json.loads((tmp_path / "d.json").read_text())
    assert record["width"] == 640 and len(record["detections"]) <= 50
    assert all(np.isfinite(d["box"]).all() for d in record["detections"])
    assert main(["build-engine", str(model_path), "-o", str(engine), "--batch", "4"]) == 2
    assert "fixed batch of 1" in capsys.readouterr().err


def test_build_engine_without_tensorrt_fails_cleanly(model_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["build-engine", str(model_path), "-o", str(tmp_path / "x.engine")]) == 1
    assert "build-engine needs TensorRT" in capsys.readouterr().err
