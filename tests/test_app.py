"""The sample service answers its health check (what the Dockerfile's HEALTHCHECK and probes call)."""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "app"))
import server


@pytest.fixture
def base_url() -> Iterator[str]:
    httpd = server.serve(0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_health(base_url: str) -> None:
    assert get(f"{base_url}/health") == (200, {"status": "ok"})


def test_root_and_not_found(base_url: str) -> None:
    status, body = get(f"{base_url}/")
    assert status == 200 and body["service"] == "pouw-sample"
    assert get(f"{base_url}/nope") == (404, {"error": "not found"})


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    text = (Path(server.__file__).parent / "Dockerfile").read_text()
    stages = [line.split()[-1] for line in text.splitlines() if line.startswith("FROM ")]
    assert stages == ["build", "test", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert "USER 10001:10001" in runtime and "HEALTHCHECK" in runtime and "/health" in runtime
    assert "--mount=type=secret,id=pip_index_token" in text
