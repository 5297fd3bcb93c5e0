"""Inference: `digits predict` latency for one picture and throughput for 10,000, and
`mlflow models serve` answering pictures (base64 PNGs) one at a time and 100 at a time.

    .venv/bin/python benchmarks/inference.py [--requests 200] [--repeat 3]

Trains a seed CNN briefly (1 epoch on 10,000 images: speed does not depend on how well
it learnt) into a temporary store, promotes it to `mnist-digit-classifier@champion`, then
measures, as a user would run them:
- `digits predict --model models:/mnist-digit-classifier@champion digit.png`, a whole
  process (start-up, model load, preprocessing, prediction);
- the same with a .npy of the 10,000 test images; the two take turns for `--repeat`
  rounds, and each is shown as min / median / max of its processes;
- a real `mlflow models serve` process on 127.0.0.1 (one uvicorn worker, its default),
  sent pictures as a client sends them, `{"dataframe_records": [{"image": <base64>}]}`:
  MNIST test digits as 28x28 PNGs, and "scans" (the same digits 4x larger, dark ink on
  light paper, which preprocessing must crop, fit and centre). One client sends a bounded
  loop of requests one after another over one keep-alive connection (as a client library
  with a session does); batch-1 requests are also sent on a new connection each. Every
  request is timed in three parts, each shown as min / median / max: the client's
  encoding (PNG bytes -> base64 -> JSON), the HTTP round trip (the server's whole work:
  parsing, base64 decoding, preprocessing, the network, the JSON answer), and, measured
  apart in this process on the same model, the pyfunc's `predict` alone (what the
  server's round trip spends in the model). Images/s are from the round trips.
Writes benchmarks/results/inference.{json,md}.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import env as child_env
from common import rounds, save, show, spread, table, timed

NAME = "mnist-digit-classifier"
BIN = Path(sys.executable).parent
BATCHES = (1, 100)
HEADERS = {"Content-Type": "application/json"}


def encode(pngs: list[bytes]) -> bytes:
    """A request body, as a client makes it from picture files' bytes."""
    records = [{"image": base64.b64encode(png).decode("ascii")} for png in pngs]
    return json.dumps({"dataframe_records": records}).encode()


class Client:
    """POSTs to /invocations over one keep-alive connection, or a new one each time."""

    def __init__(self, port: int, keep_alive: bool):
        self.port, self.keep_alive, self.connection = port, keep_alive, None

    def post(self, payload: bytes) -> bytes:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.connection.request("POST", "/invocations", payload, HEADERS)
        response = self.connection.getresponse()
        answer = response.read()
        if not self.keep_alive:
            self.connection.close()
            self.connection = None
        if response.status != 200:
            sys.exit(f"the server answered {response.status}: {answer[:500]!r}")
        return answer


def start_server(store: Path, uri: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environ = {**child_env(), "MLFLOW_TRACKING_URI": uri}
    environ["PATH"] = f"{BIN}:{environ.get('PATH', '')}"
    command = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion"]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=store, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    started = time.perf_counter()
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                break
        except OSError:
            pass
        finally:
            connection.close()
        if process.poll() is not None or time.perf_counter() - started > 180:
            process.kill()
            sys.exit("mlflow models serve did not start")
        time.sleep(0.25)
    return process, port, time.perf_counter() - started


def serve(store: Path, uri: str, requests: int, pictures: dict[str, list[bytes]]) -> dict:
    process, port, start_up = start_server(store, uri)
    results: dict = {"start_up_seconds": round(start_up, 1)}
    try:
        for kind, pngs in pictures.items():
            for batch in BATCHES:
                n = requests if batch == 1 else max(1, requests // 4)
                for keep_alive in (True, False) if batch == 1 else (True,):
                    key = f"{kind}_batch_{batch}" + ("" if keep_alive else "_new_connection")
                    results[key] = _requests(Client(port, keep_alive), pngs, batch, n)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def _requests(client: Client, pngs: list[bytes], batch: int, n: int) -> dict:
    client.post(encode(pngs[:batch]))  # warm-up
    encoding, round_trips = [], []
    for i in range(n):
        start = (i * batch) % (len(pngs) - batch + 1)
        t = time.perf_counter()
        payload = encode(pngs[start : start + batch])
        encoding.append(time.perf_counter() - t)
        t = time.perf_counter()
        answer = client.post(payload)
        round_trips.append(time.perf_counter() - t)
        predictions = json.loads(answer)["predictions"]
        assert len(predictions) == batch and len(predictions[0]["probabilities"]) == 10
    total = sum(round_trips)
    return {
        "requests": n,
        "images_per_second": round(n * batch / total),
        "round_trip_ms": spread([1000 * t for t in round_trips], 2),
        "client_encoding_ms": spread([1000 * t for t in encoding], 3),
        "request_kib": round(len(payload) / 1024, 1),
    }


def in_process(uri: str, requests: int, pictures: dict[str, list[bytes]]) -> dict:
    """The pyfunc's predict alone, on what the server hands it (a table of bytes)."""
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    results = {}
    for kind, pngs in pictures.items():
        for batch in BATCHES:
            n = requests if batch == 1 else max(1, requests // 4)
            tables = [
                pd.DataFrame({"image": pngs[start : start + batch]})
                for start in ((i * batch) % (len(pngs) - batch + 1) for i in range(n))
            ]
            model.predict(tables[0])  # warm-up
            seconds = []
            for frame in tables:
                t = time.perf_counter()
                model.predict(frame)
                seconds.append(time.perf_counter() - t)
            results[f"{kind}_batch_{batch}"] = {
                "predict_ms": spread([1000 * s for s in seconds], 2)
            }
    return results


def make_pictures(test: np.ndarray, count: int) -> dict[str, list[bytes]]:
    import io

    from PIL import Image

    def png(image) -> bytes:
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()

    scans = (Image.fromarray(255 - t).resize((112, 112), Image.Resampling.BICUBIC) for t in test)
    return {
        "mnist": [png(Image.fromarray(t)) for t in test[:count]],
        "scan": [png(s) for s, _ in zip(scans, range(count))],
    }


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
        pictures = make_pictures(test, count=1000)
        served = serve(store, uri, args.requests, pictures)
        for key, value in in_process(uri, args.requests, pictures).items():
            served[key].update(value)

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
    print_results(args, results)


def print_results(args, results: dict) -> None:
    one, many, served = (
        results["predict_one_image_seconds"],
        results["predict_10000_images_seconds"],
        results["serve"],
    )
    rows = [
        ["`digits predict` 1 PNG (whole process)", show(one, "{:.2f}", " s"), "", "", ""],
        [
            "`digits predict` 10,000 images (.npy, whole process)",
            show(many, "{:.2f}", " s"),
            "",
            "",
            f"{results['predict_images_per_second_beyond_startup']:,} images/s beyond "
            "start-up (medians)",
        ],
    ]
    names = {"mnist": "28x28 MNIST PNG", "scan": "112x112 scan PNG"}
    for kind, label in names.items():
        for batch in BATCHES:
            for suffix in ("", "_new_connection"):
                r = served.get(f"{kind}_batch_{batch}{suffix}")
                if r is None:
                    continue
                how = "new connection each" if suffix else "keep-alive"
                in_model = served[f"{kind}_batch_{batch}"]["predict_ms"]
                rows.append(
                    [
                        f"`mlflow models serve` round trip, {batch} x {label} "
                        f"({r['request_kib']:,} KiB request, {how})",
                        show(r["round_trip_ms"], "{:.1f}", " ms"),
                        show(r["client_encoding_ms"], "{:.2f}", " ms"),
                        show(in_model, "{:.1f}", " ms"),
                        f"{r['images_per_second']:,} images/s",
                    ]
                )
    setup = (
        f"`benchmarks/inference.py --requests {args.requests} --repeat {args.repeat}`: seed "
        f"CNN; `digits predict`: {args.repeat} processes each, the two alternated; serving: "
        f"{args.requests} batch-1 and {max(1, args.requests // 4)} batch-100 requests of base64 "
        f"PNGs in a loop, one client, after a warm-up request (server start-up: "
        f"{served['start_up_seconds']} s, one uvicorn worker). Round trip: the request "
        f"sent to the answer read (the server's work and the network); client encoding: "
        f"PNG bytes -> base64 -> JSON, not in the round trip; pyfunc predict: the served "
        f"model's `predict` alone, in-process on the same model and pictures; images/s "
        f"from the round trips."
    )
    save(
        "inference",
        setup,
        results,
        table(
            [
                "what",
                "time (min / median / max)",
                "client encoding",
                "pyfunc predict (in-process)",
                "rate",
            ],
            rows,
        ),
    )


if __name__ == "__main__":
    main()
