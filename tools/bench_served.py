"""The bench's rows through the running app: one user, 8 users, and where one served request's time goes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pneumo.io import read_image
from pneumo.preprocess import to_model_input
from pneumo.ui.cache import display_film, encode_image
from pneumo.ui.service import Analysis, Service
from tools.appserver import running_app, status_mb
from tools.timing import Table, interleaved, timed


def draw(analysis: Analysis) -> bytes:
    """The app's own drawing of a result, as the page shows it (heat at 0.5, lung outline on), and its JPEG."""
    return encode_image(Service.render(analysis, 0.5, True, show_lungs=True), ".jpg")


def served_breakdown(predictor, path: Path, repeats: int, served_ms: float, trunk_ms: float | None,
                     table: Table) -> None:
    """Where one served request's time goes: each stage of the app timed alone in-process (p50), and the rest of
    the served p50, which is Gradio's: upload, queue, response, the client's download."""
    image = read_image(path)
    x = to_model_input(image, predictor.input_size)[None]
    analysis = Analysis(path.name, image, predictor.predictions([image], x, with_cam=True)[0], 0.0)
    stages = {"decode (read_image)": lambda: read_image(path),
              "preprocess (to_model_input)": lambda: to_model_input(image, predictor.input_size),
              "model pass: trunk, heads, lung head, Grad-CAM, checks": lambda: predictor.predictions([image], x, True),
              "overlay render at display size (with the outline), JPEG": lambda: draw(analysis),
              "display resize": lambda: display_film(image.gray)}
    found = {name: float(np.median(timed(fn, repeats))) * 1000 for name, fn in stages.items()}
    for name, ms in found.items():
        table.add(f"  served breakdown: {name}", ms, None, "ms")
    if trunk_ms is not None:
        table.add("  (of the model pass, the bare trunk)", trunk_ms, None, "ms")
    table.add("  served breakdown: Gradio and the round trip (the rest)", served_ms - sum(found.values()), None, "ms")


def bench_app(model_source: str | None, request_path: Path, requests: int, load_files: list[Path],
              table: Table) -> dict:
    """Start `python app.py` and time it to ready; one user's `requests` of `request_path` (upload, JSON and the
    overlay picture back: what a visitor waits for), interleaved through a browser's requests (PageClient) and
    gradio_client; 8 users at once over `load_files`, 5 requests each, through each client; peak RSS."""
    from tools.load_test import CLIENTS, make_client, run_load

    with running_app({"PNEUMO_MODEL": model_source} if model_source else None) as app:
        sends = [make_client(app.url, name) for name in CLIENTS]  # a browser's requests, then gradio_client
        both = interleaved([lambda send=send: send(request_path) for send in sends], requests)
        served, through_client = ([t * 1000 for t in times] for times in both)
        loads = {name: run_load(app.url, load_files, users=8, requests=5, client=name) for name in CLIENTS}
        rss = status_mb(app.process.pid, "VmHWM")
    failures = [f for load in loads.values() for f in load["failures"]]
    if failures:
        raise RuntimeError(f"the 8-user loads had {len(failures)} failures, e.g. {failures[0]}")
    load8 = {name: [t * 1000 for t in load["latencies"]] for name, load in loads.items()}
    table.add("app start-up to ready (python app.py)", app.seconds_to_ready, None, "s")
    table.add("served request, one user (a browser's requests), p50", served, None, "ms")
    table.add("  same through gradio_client (its 50 ms polling), p50", through_client, None, "ms")
    table.add("served request, 8 users at once (5 each, a browser's requests), p50", load8["page"], None, "ms")
    table.add("  same through gradio_client (8 clients' CPU on this machine), p50", load8["gradio_client"], None,
              "ms")
    sent = len(sends) * (requests + 1) + sum(len(load["latencies"]) for load in loads.values())  # +1: warm-ups
    table.add(f"app peak RSS after {sent} requests", rss, None, "MB")
    return {"app_start_s": round(app.seconds_to_ready, 1), "app_rss_mb": round(rss),
            "served_p50_ms": round(float(np.median(served)), 1),
            "served_gradio_client_p50_ms": round(float(np.median(through_client)), 1),
            "load8_p50_ms": round(float(np.median(load8["page"])), 1),
            "load8_gradio_client_p50_ms": round(float(np.median(load8["gradio_client"])), 1)}
