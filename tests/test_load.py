"""A small load run in CI (the full 8 x 25 is `python -m tools.load_test`, see README)."""

from __future__ import annotations

import pytest


@pytest.mark.server
def test_concurrent_users_all_succeed_and_memory_settles(server, tmp_path):
    import synth
    from PIL import Image

    from tools.load_test import run_load

    files = []
    for k in range(3):
        files.append(tmp_path / f"x{k}.jpeg")
        Image.fromarray(synth.xray(k, k % 2 == 1, (400, 480))).save(files[-1])
    url, _, _, pid = server
    report = run_load(url, files, users=4, requests=10, pid=pid)
    assert report["failures"] == [] and len(report["latencies"]) == 40
    rss = report["rss_mb"]
    assert len(rss) >= 4 and rss[-1] - rss[1] < 150, f"server memory kept growing: {rss}"

