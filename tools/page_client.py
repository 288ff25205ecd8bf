"""A client that calls the app's /predict the way the web page calls the app: for timing what a visitor waits for.

gradio_client adds time of its own between a result's arrival and its return: its reader thread hands messages
over through a list that the caller polls every 50 ms (gradio_client/utils.py, `time.sleep(0.05)`), and it runs a
cancel-check thread and extra requests per call. A browser reads the event stream as it arrives. This client makes
a browser's requests in a browser's order, nothing else: upload the film (POST /gradio_api/upload), join the queue
(POST /gradio_api/queue/join), read the event stream until the result (GET /gradio_api/queue/data), fetch the
overlay picture (GET its URL). It joins /predict's queue, not the page's upload event: both run the same model pass
under the same lock and draw the same JPEG overlay (the page's with the lung outline), the page answering with HTML
instead of JSON. Used by tools.bench next to gradio_client, so both figures appear in one run, and by
tools.load_test (its default client).
"""

from __future__ import annotations

import json
import mimetypes
import uuid
from pathlib import Path

import httpx


class PageClient:
    def __init__(self, url: str, api_name: str = "predict"):
        self.url = url if url.endswith("/") else url + "/"
        self.http = httpx.Client(timeout=120)
        config = self.http.get(self.url + "config").raise_for_status().json()
        found = [d["id"] for d in config["dependencies"] if d.get("api_name") == api_name]
        if not found:
            raise ValueError(f"{self.url} has no endpoint named {api_name!r}")
        self.fn_index = found[0]

    def predict(self, path: str | Path, age: float | None = None) -> tuple[dict, bytes]:
        """The result JSON and the overlay picture's bytes, as the page receives them."""
        path = Path(path)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with open(path, "rb") as file:
            uploaded = self.http.post(self.url + "gradio_api/upload", files={"files": (path.name, file, mime)})
        film = {"path": uploaded.raise_for_status().json()[0], "orig_name": path.name,
                "meta": {"_type": "gradio.FileData"}}
        session = uuid.uuid4().hex
        self.http.post(self.url + "gradio_api/queue/join", json={
            "data": [film, age], "fn_index": self.fn_index, "session_hash": session, "event_data": None,
            "trigger_id": None}).raise_for_status()
        result, overlay = self._completed(session)
        return result, (self.http.get(overlay["url"]).raise_for_status().content if overlay else b"")

    def _completed(self, session: str) -> list:
        with self.http.stream("GET", self.url + "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    if not message.get("success"):
                        raise RuntimeError(f"the app failed the request: {message.get('output')}")
                    return message["output"]["data"]
        raise RuntimeError("the event stream ended before the result")

    def close(self) -> None:
        self.http.close()
