"""Inference: `digits predict` latency for one image and throughput for 10,000, and
`mlflow models serve` requests per second for batches of 1 and 100.

    .venv/bin/python benchmarks/inference.py [--requests 200] [--repeat 3]

Trains a seed CNN briefly (1 epoch on 10,000 images: speed does not depend on how well
it learnt) into a temporary store, promotes it to `mnist-digit-classifier@champion`, then
measures, as a user would run them:
- `digits predict --model models:/mnist-digit-classifier@champion digit.png`, a whole
  process (start-up, model load, preprocessing, prediction);
- the same with a .npy of the 10,000 test images; the two take turns for `--repeat`
  rounds, and each is shown as min / median / max of its processes;
- a real `mlflow models serve` process on 127.0.0.1, sent a bounded loop of requests one
  after another (one client, keep-alive off: each request a new connection); every
  request's latency is recorded, shown as min / median / max.
Writes benchmarks/results/inference.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from common import env as child_env
from common import rounds, save, show, spread, table, timed

NAME = "mnist-digit-classifier"
BIN = Path(sys.executable).parent


def body(images: np.ndarray) -> bytes:
    return json.dumps({"inputs": images.tolist()}).encode()


def post(url: str, payload: bytes) -> dict:
    request = urllib.request.Request(url, payload, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def serve(store: Path, uri: str, requests: int, images: np.ndarray) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environ = {**child_env(), "MLFLOW_TRACKING_URI": uri}
    environ["PATH"] = f"{BIN}:{environ.get('PATH', '')}"
    command = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{NAME}@champion",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        command, cwd=store, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(f"{base}/ping", timeout=5).close()
                break
            except OSError:
                if process.poll() is not None or time.perf_counter() - started > 180:
                    sys.exit("mlflow models serve did not start")
                time.sleep(0.25)
        start_up = time.perf_counter() - started
        results = {"start_up_seconds": round(start_up, 1)}
        for batch in (1, 100):
            n = requests if batch == 1 else max(1, requests // 4)
            # Bodies are encoded before the clock starts: what is timed is the server
            # (and the HTTP round trip), not this client's JSON encoding.
            bodies = [body(images[(i * batch) % 9000 :][:batch]) for i in range(n)]
            post(f"{base}/invocations", bodies[0])  # warm-up
            latencies = []
            for payload in bodies:
                t = time.perf_counter()
                answer = post(f"{base}/invocations", payload)
                latencies.append(time.perf_counter() - t)
                assert len(answer["predictions"]) == batch
            total = sum(latencies)
            results[f"batch_{batch}"] = {
                "requests": n,
                "requests_per_second": round(n / total, 1),
                "images_per_second": round(n * batch / total),
                "latency_ms": spread([1000 * t for t in latencies], 1),
                "request_kib": round(len(bodies[0]) / 1024),
            }
        return results
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="batch-1 requests")
    parser.add_argument("--repeat", type=int, default=3, help="digits predict runs each")
    parser.add_argument("--train-limit", type=int, default=10000, help="images to train on")
    args = parser.parse_args()

    from PIL import Image

    from digit_experiments.core import data

    with tempfile.TemporaryDirectory(prefix="inference-bench-") as tmp:
        store = Path(tmp)
        uri = f"sqlite:///{store}/mlflow.db"
        timed(
            [
                sys.executable,
                "-m",
                "digit_experiments.train",
                f"data.train_limit={args.train_limit}",
                "trainer.epochs=1",
                f"tracking.uri={uri}",
            ],
            cwd=store,
        )
        timed(
            [
                str(BIN / "digits"),
                "--tracking-uri",
                uri,
                "promote",
                "--experiment",
                "digit-experiments",
            ],
            cwd=store,
        )
        test = data.load_idx_dir(data.bundled_dir())["test_images"]
        Image.fromarray(255 - test[0]).resize((112, 112)).save(store / "digit.png")  # a "scan"
        np.save(store / "test.npy", test)
        model = f"models:/{NAME}@champion"
        predict = [str(BIN / "digits"), "--tracking-uri", uri, "predict", "--model", model]
        inputs = {"one": "digit.png", "many": "test.npy"}
        seconds: dict[str, list[float]] = {name: [] for name in inputs}
        for _, name in rounds(list(inputs), args.repeat):
            seconds[name].append(timed([*predict, inputs[name]], cwd=store)[0])
        served = serve(store, uri, args.requests, data.to_model_input(test))

    one, many = spread(seconds["one"], 2), spread(seconds["many"], 2)
    results = {
        "repeat": args.repeat,
        "predict_one_image_seconds": one,
        "predict_10000_images_seconds": many,
        # The process's fixed cost (imports, model load) is what one image measures.
        "predict_images_per_second_beyond_startup": round(
            10000 / max(many["median"] - one["median"], 1e-9)
        ),
        "serve": served,
    }
    rows = [
        ["`digits predict` 1 PNG (whole process)", show(one, "{:.2f}", " s"), ""],
        [
            "`digits predict` 10,000 images (.npy, whole process)",
            show(many, "{:.2f}", " s"),
            f"{results['predict_images_per_second_beyond_startup']:,} images/s beyond start-up "
            "(medians)",
        ],
    ]
    for batch in (1, 100):
        r = served[f"batch_{batch}"]
        rows.append(
            [
                f"`mlflow models serve`, batch of {batch} ({r['request_kib']:,} KiB request)",
                show(r["latency_ms"], "{:.1f}", " ms"),
                f"{r['requests_per_second']} requests/s, {r['images_per_second']:,} images/s",
            ]
        )
    setup = (
        f"`benchmarks/inference.py --requests {args.requests} --repeat {args.repeat}`: seed "
        f"CNN; `digits predict`: {args.repeat} processes each, the two alternated; serving: "
        f"{args.requests} batch-1 and {max(1, args.requests // 4)} batch-100 requests in a "
        f"loop, one client, after a warm-up request (server start-up: "
        f"{served['start_up_seconds']} s)."
    )
    save(
        "inference",
        setup,
        results,
        table(["what", "time (min / median / max)", "rate"], rows),
    )


if __name__ == "__main__":
    main()
