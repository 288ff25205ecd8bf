"""Load test: N users x M requests against a real app; latency, failures and memory.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.load_test
    python -m tools.load_test --url http://127.0.0.1:7860/ --users 8 --requests 25   # a running app

Without --url it starts `python app.py` itself (so it can read the server's memory) and stops it after.
Then it also counts the run's files still in the app's cache once they should be deleted.
Exit code 1 if any request failed or any file was left.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tools.appserver import ROOT, running_app, status_mb

CLIENTS = ("page", "gradio_client")
# Seconds the app keeps uploads in this run: well above 8 users' queue wait, slower machines included (p95 554-591 ms
# on the 2-core EPYC of docs/safety.md#concurrency).
KEEP_S = 15


def run_load(url: str, files: list[Path], users: int, requests: int, pid: int | None = None,
             client: str = "page") -> dict:
    """Every user sends `requests` files in turn, through `client` (CLIENTS); returns latencies (s), failures and
    RSS samples (MB)."""
    latencies, failures, rss = [], [], []
    done = 0
    lock = threading.Lock()

    def user(index: int) -> None:
        nonlocal done
        send = make_client(url, client)
        for k in range(requests):
            path = files[(index + k) % len(files)]
            start = time.perf_counter()
            try:
                result = send(path)
                score = result["probability"]  # null for a film the model does not assess
                ok = "assessed" in result and (score is None or 0.0 <= score <= 1.0)
            except Exception as err:  # noqa: BLE001 - a load test counts every kind of failure
                ok, result = False, f"{type(err).__name__}: {err}"
            with lock:
                latencies.append(time.perf_counter() - start)
                done += 1
                if not ok:
                    failures.append(str(result))
                if pid and done % max(1, users * requests // 8) == 0:
                    rss.append(round(status_mb(pid, "VmRSS")))

    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    return {"latencies": latencies, "failures": failures, "rss_mb": rss}


def make_client(url: str, client: str):
    """A function sending one film to /predict and returning the result JSON."""
    if client == "page":
        from tools.page_client import PageClient

        page = PageClient(url)
        return lambda path: page.predict(path)[0]
    if client == "gradio_client":
        from gradio_client import Client, handle_file

        gradio = Client(url, verbose=False)
        return lambda path: gradio.predict(handle_file(str(path)), api_name="/predict")[0]
    raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running app; default: start python app.py")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="per user")
    parser.add_argument("--client", choices=CLIENTS, default="page",
                        help="page: the requests a browser makes (tools/page_client.py); gradio_client: its client, "
                        "which costs this machine's cores about as much CPU per request as the server")
    parser.add_argument("files", nargs="*", type=Path, help="X-rays to send (default: examples/)")
    args = parser.parse_args()
    files = args.files or sorted((ROOT / "examples").glob("*.jpeg"))
    left = []
    if args.url:
        report = run_load(args.url, files, args.users, args.requests, client=args.client)
    else:
        with tempfile.TemporaryDirectory() as cache, running_app(
                {"GRADIO_TEMP_DIR": cache, "PNEUMO_DELETE_AFTER_S": str(KEEP_S)}) as app:
            at_start = set(Path(cache).rglob("*"))  # the demo's example images and plots, cached for good
            report = run_load(app.url, files, args.users, args.requests, app.process.pid, args.client)
            time.sleep(2 * KEEP_S + 2)  # one sweep period after the last file is old enough
            left = [p for p in Path(cache).rglob("*") if p.is_file() and p not in at_start]
            print(f"files of the run left in the app's cache {2 * KEEP_S + 2} s after it "
                  f"(PNEUMO_DELETE_AFTER_S={KEEP_S}): {len(left)}")
    lat = np.array(report["latencies"]) * 1000
    print(f"{args.users} users x {args.requests} requests = {len(lat)}: {len(report['failures'])} failed; "
          f"latency p50 {np.median(lat):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms, max {lat.max():.0f} ms")
    if report["rss_mb"]:
        print(f"server RSS (MB) through the run: {report['rss_mb']}")
    for failure in report["failures"][:5]:
        print(f"failure: {failure}")
    return 1 if report["failures"] or left else 0


if __name__ == "__main__":
    sys.exit(main())
