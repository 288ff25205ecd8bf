"""A small load run in CI (the full 8 x 25 is `python -m tools.load_test`, see README)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # a real server under load


@pytest.mark.server
@pytest.mark.parametrize("client", ["page", "gradio_client"])
def test_concurrent_users_all_succeed_and_memory_settles(server, tmp_path, client):
    import synth
    from PIL import Image

    from tools.load_test import run_load

    files = []
    for k in range(3):
        files.append(tmp_path / f"x{k}.jpeg")
        Image.fromarray(synth.xray(k, k % 2 == 1, (400, 480))).save(files[-1])
    url, _, _, pid = server
    report = run_load(url, files, users=4, requests=10, pid=pid, client=client)
    assert report["failures"] == [] and len(report["latencies"]) == 40
    rss = report["rss_mb"]
    assert len(rss) >= 4 and rss[-1] - rss[1] < 150, f"server memory kept growing: {rss}"



@pytest.mark.server
def test_the_page_client_gets_what_gradio_client_gets(server, tmp_path):
    """The bench's served figure goes through PageClient: it must be the same request, with the same answer."""
    import io

    import synth
    from gradio_client import Client, handle_file
    from PIL import Image

    from tools.page_client import PageClient

    path = tmp_path / "film.png"
    Image.fromarray(synth.xray(7, True, (500, 420))).save(path)
    page = PageClient(server[0])
    result, picture = page.predict(path, age=4)
    expected, overlay = Client(server[0], verbose=False).predict(handle_file(str(path)), 4, api_name="/predict")
    assert result == expected
    assert Image.open(io.BytesIO(picture)).size == Image.open(overlay).size
    with pytest.raises(ValueError, match="has no endpoint named 'nothing'"):
        PageClient(server[0], api_name="nothing")
