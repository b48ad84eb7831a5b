"""delivery.notify against a real HTTP server on 127.0.0.1: payloads, retries, secrecy, off when unset."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from delivery import notify
from tests.conftest import ROOT

SECRET = "T0SECRET/B0SECRET/XyZsEcReTtOkEn42"  # what a leaked webhook would reveal
RUN_URL = "https://github.com/pouw/pouw-cicd/actions/runs/123"
SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"


@dataclass
class Webhook:
    """A local webhook: answers each POST with the next scripted (status, body, headers), then 200."""

    url: str
    replies: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    hang: threading.Event | None = None

    @property
    def payloads(self) -> list[Any]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy from the environment: never send the test traffic to one."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    state = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length).decode()}
            )
            if state.hang is not None:
                state.hang.wait(5)
                return
            status, text, headers = state.replies.pop(0) if state.replies else (200, "ok", {})
            data = text.encode()
            self.send_response(status)
            for name, value in {"Content-Type": "text/plain", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/services/{SECRET}?sig=SiGnAtUrE0123456789"
    try:
        yield state
    finally:
        if state.hang is not None:
            state.hang.set()
        server.shutdown()
        server.server_close()


def run(
    args: list[str], url: str | None, fmt: str | None = "slack", sleeps: list[float] | None = None
) -> int:
    env = {}
    if url is not None:
        env[notify.WEBHOOK_ENV] = url
    if fmt is not None:
        env[notify.FORMAT_ENV] = fmt
    return notify.main(args, env=env, sleep=(sleeps if sleeps is not None else []).append)


DEPLOY = ["--event", "deploy", "--stack", "prod", "--status", "succeeded", "--run-url", RUN_URL]


# --- payloads -------------------------------------------------------------------------------------


def test_slack_payload(webhook: Webhook, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*DEPLOY, "--commit", SHA, "--detail", "web 1.4.2 <canary> & more"], webhook.url) == 0
    [request] = webhook.requests
    assert request["path"] == f"/services/{SECRET}?sig=SiGnAtUrE0123456789"
    assert request["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert webhook.payloads == [
        {
            "text": "prod: deploy succeeded — web 1.4.2 &lt;canary&gt; &amp; more · commit 1a2b3c4 · "
            + RUN_URL,
            "blocks": [
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": "*prod: deploy succeeded*\nweb 1.4.2 &lt;canary&gt; &amp; more",
                    },
                },
                {
                    "type": "context",
                    "elements": [
                        {
                            "type": "mrkdwn",
                            "text": f"status: succeeded · commit `1a2b3c4` · <{RUN_URL}|open the run>",
                        }
                    ],
                },
            ],
        }
    ]
    out = capsys.readouterr().out
    assert out == "notification sent (slack): prod: deploy succeeded — web 1.4.2 <canary> & more\n"


def test_teams_payload_for_a_rollback(webhook: Webhook) -> None:
    args = ["--event", "rollback", "--stack", "prod", "--status", "started", "--run-url", RUN_URL]
    assert (
        run([*args, "--commit", SHA, "--detail", "web: canary 1.4.2 to weight 0"], webhook.url, "teams") == 0
    )
    assert webhook.payloads == [
        {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "msteams": {"width": "Full"},
                        "body": [
                            {
                                "type": "TextBlock",
                                "text": "ROLLBACK prod: rollback started",
                                "weight": "Bolder",
                                "size": "Medium",
                                "color": "Warning",
                                "wrap": True,
                            },
                            {
                                "type": "TextBlock",
                                "text": "web: canary 1.4.2 to weight 0",
                                "wrap": True,
                                "spacing": "Small",
                            },
                            {
                                "type": "FactSet",
                                "facts": [
                                    {"title": "Stack", "value": "prod"},
                                    {"title": "Event", "value": "rollback"},
                                    {"title": "Status", "value": "started"},
                                    {"title": "Commit", "value": "1a2b3c4"},
                                ],
                            },
                        ],
                        "actions": [{"type": "Action.OpenUrl", "title": "Open the run", "url": RUN_URL}],
                    },
                }
            ],
        }
    ]


@pytest.mark.parametrize(
    ("event", "status", "headline"),
    [
        ("deploy", "started", "staging: deploy started"),
        ("deploy", "failed", "staging: deploy failed"),
        ("rollback", "succeeded", "ROLLBACK staging: rollback succeeded"),
        ("rollback", "failed", "ROLLBACK staging: rollback failed"),
        ("approval", None, "staging: approval needed to deploy"),
    ],
)
def test_headlines(webhook: Webhook, event: str, status: str | None, headline: str) -> None:
    args = ["--event", event, "--stack", "staging", "--run-url", RUN_URL]
    assert run([*args, *(["--status", status] if status else [])], webhook.url) == 0
    [payload] = webhook.payloads
    assert payload["text"] == f"{headline} · {RUN_URL}"
    assert payload["blocks"][1]["elements"][0]["text"].startswith(f"status: {status or 'waiting'} · <")


# --- usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--event", "approval", "--status", "started"], "--status is not used with --event approval"),
        (["--event", "deploy"], "--event deploy needs --status"),
        (["--event", "rollback"], "--event rollback needs --status"),
        ([*DEPLOY[:6], "--commit", "not-a-sha"], "--commit 'not-a-sha': expected a git commit sha"),
        ([*DEPLOY[:4], "--stack", "prod; rm -rf /"], "--stack 'prod; rm -rf /': expected a stack name"),
    ],
)
def test_usage_errors_exit_2_even_when_off(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"--stack": "prod", "--run-url": RUN_URL}
    full = [*args]
    for flag, value in base.items():
        if flag not in full:
            full += [flag, value]
    assert run(full, None) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


@pytest.mark.parametrize("run_url", ["", "github.com/run/1", "https://x/y z", "javascript:alert(1)"])
def test_run_url_must_be_a_link(run_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*DEPLOY[:6], "--run-url", run_url], None) == 2
    assert "--run-url must be the http(s) URL of the CI run" in capsys.readouterr().err


def test_argparse_rejects_unknown_values() -> None:
    with pytest.raises(SystemExit) as exit_:
        notify.main(
            ["--event", "deploy", "--stack", "prod", "--status", "done", "--run-url", RUN_URL], env={}
        )
    assert exit_.value.code == 2


def test_empty_commit_and_multiline_detail_are_normalised(webhook: Webhook) -> None:
    detail = "web 1.4.2\n\tapi\x1b[31m 2.0.0\r\n" + "x" * 300
    assert run([*DEPLOY, "--commit", "", "--detail", detail], webhook.url) == 0
    [payload] = webhook.payloads
    lead = payload["blocks"][0]["text"]["text"].split("\n")
    assert lead[1].startswith("web 1.4.2 api 2.0.0 xxx")
    assert len(lead[1]) == notify.DETAIL_CHARS and lead[1].endswith("…")
    assert "commit" not in payload["text"]


# --- off, format --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, "", "  \n"])
def test_off_when_unset_or_empty(url: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(DEPLOY, url, fmt=None) == 0
    assert capsys.readouterr().out == "notifications off (POUW_NOTIFY_WEBHOOK unset)\n"


@pytest.mark.parametrize(
    ("url", "fmt"),
    [
        ("https://hooks.slack.com/services/T0/B0/x", "slack"),
        ("https://HOOKS.SLACK.COM./services/T0/B0/x", "slack"),
        (
            "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke",
            "teams",
        ),
        ("https://default0a1b.c2.environment.api.powerplatform.com:443/powerautomate/automations/x", "teams"),
        ("https://contoso.webhook.office.com/webhookb2/x", "teams"),
        ("https://webhook.office.com/webhookb2/x", "teams"),
    ],
)
def test_format_from_the_host(url: str, fmt: str) -> None:
    assert notify.choose_format(url) == fmt


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/services/x",
        "https://hooks.slack.com.evil.example/services/x",
        "https://evillogic.azure.com/x",
        "https://notwebhook.office.com.example/x",
    ],
)
def test_unknown_host_is_exit_2_naming_the_setting(
    url: str, webhook: Webhook, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_url = f"{url}/{SECRET}"
    assert run(DEPLOY, secret_url, fmt=None) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: cannot tell the format of the webhook in POUW_NOTIFY_WEBHOOK")
    assert captured.err.rstrip().endswith("set POUW_NOTIFY_FORMAT to slack or teams")
    assert SECRET not in captured.err and url not in captured.err
    assert webhook.requests == []


def test_explicit_format_wins_and_is_checked(webhook: Webhook, capsys: pytest.CaptureFixture[str]) -> None:
    assert notify.choose_format("https://hooks.slack.com/x", " Teams ") == "teams"
    assert run(DEPLOY, webhook.url, fmt="discord") == 2
    assert "POUW_NOTIFY_FORMAT='discord': must be slack or teams" in capsys.readouterr().err


@pytest.mark.parametrize(
    "url", ["http://hooks.slack.com/services/" + SECRET, "ftp://hooks.slack.com/" + SECRET, "https:///x"]
)
def test_webhook_must_be_https(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(DEPLOY, url) == 2
    err = capsys.readouterr().err
    assert "POUW_NOTIFY_WEBHOOK must be" in err
    assert SECRET not in err


# --- delivery -------------------------------------------------------------------------------------


def test_retries_a_500_then_succeeds(webhook: Webhook, capsys: pytest.CaptureFixture[str]) -> None:
    webhook.replies = [(500, "boom", {})]
    sleeps: list[float] = []
    assert run(DEPLOY, webhook.url, sleeps=sleeps) == 0
    assert len(webhook.requests) == 2 and webhook.payloads[0] == webhook.payloads[1]
    assert sleeps == [1.0]
    out = capsys.readouterr().out
    assert "notify: attempt 1 of 3 failed (HTTP 500 Internal Server Error: boom); retrying in 1s" in out
    assert out.endswith("notification sent (slack, after 2 attempts): prod: deploy succeeded\n")
    assert "::warning::" not in out


def test_a_429_waits_for_retry_after_capped(webhook: Webhook) -> None:
    webhook.replies = [(429, "", {"Retry-After": "3"}), (429, "", {"Retry-After": "3600"})]
    sleeps: list[float] = []
    assert run(DEPLOY, webhook.url, sleeps=sleeps) == 0
    assert sleeps == [3.0, notify.RETRY_AFTER_CAP]
    assert len(webhook.requests) == 3


def test_failure_after_retries_warns_without_the_url(
    webhook: Webhook, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server echoes the URL back: the warning must still not contain any of it.
    echo = f"bad gateway for {webhook.url}"
    webhook.replies = [(502, echo, {}), (503, echo, {}), (500, echo, {})]
    sleeps: list[float] = []
    assert run(DEPLOY, webhook.url, sleeps=sleeps) == 0
    assert len(webhook.requests) == 3 and sleeps == [1.0, 2.0]
    captured = capsys.readouterr()
    last = captured.out.splitlines()[-1]
    assert last.startswith(
        "::warning::notification not sent (slack webhook from POUW_NOTIFY_WEBHOOK): HTTP 500"
    )
    assert last.endswith("(after 3 attempts)")
    everything = captured.out + captured.err
    for piece in (webhook.url, SECRET, *SECRET.split("/"), "SiGnAtUrE0123456789"):
        assert piece not in everything
    assert notify.REDACTED in everything


def test_a_4xx_is_not_retried(webhook: Webhook, capsys: pytest.CaptureFixture[str]) -> None:
    webhook.replies = [(404, "no_service", {})]
    sleeps: list[float] = []
    assert run(DEPLOY, webhook.url, sleeps=sleeps) == 0
    assert len(webhook.requests) == 1 and sleeps == []
    assert capsys.readouterr().out == (
        "::warning::notification not sent (slack webhook from POUW_NOTIFY_WEBHOOK): "
        "HTTP 404 Not Found: no_service (not retried)\n"
    )


def test_a_redirect_is_a_failure_not_a_silent_get(
    webhook: Webhook, capsys: pytest.CaptureFixture[str]
) -> None:
    webhook.replies = [(302, "", {"Location": "http://127.0.0.1:9/elsewhere"})]
    assert run(DEPLOY, webhook.url) == 0
    assert len(webhook.requests) == 1
    assert "HTTP 302 Found (not retried)" in capsys.readouterr().out


def test_connection_refused_is_retried_then_warned(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    assert run(DEPLOY, f"http://127.0.0.1:{port}/services/{SECRET}", sleeps=sleeps) == 0
    assert sleeps == [1.0, 2.0]
    out = capsys.readouterr().out
    assert "ConnectionRefusedError" in out.splitlines()[-1] and out.splitlines()[-1].startswith("::warning::")
    assert SECRET not in out and str(port) not in out


def test_a_timeout_is_retried(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(notify, "TIMEOUT", 0.2)
    webhook.hang = threading.Event()
    assert run(DEPLOY, webhook.url) == 0
    assert len(webhook.requests) == 3
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("::warning::") and "timed out" in last and "(after 3 attempts)" in last


def test_annotations_are_escaped() -> None:
    assert notify.annotation("warning", "50% done\r\nnext") == "::warning::50%25 done%0D%0Anext"


def test_redact_removes_every_secret_part() -> None:
    url = "https://prod-1.westeurope.logic.azure.com:443/workflows/0a1b2c3d4e/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sig=AbCdEfGhIjKlMnOp"
    text = f"failed: {url} / 0a1b2c3d4e / sig AbCdEfGhIjKlMnOp / /triggers/manual/run"
    redacted = notify.redact(text, url)
    assert "0a1b2c3d4e" not in redacted and "AbCdEfGhIjKlMnOp" not in redacted
    assert "logic.azure.com:443/workflows" not in redacted
    assert redacted.startswith("failed: <redacted>")


# --- the summary file -----------------------------------------------------------------------------


def summary_file(tmp_path: Path) -> Path:
    lines = [
        "\ufeff### Preflight `prod`: passed",
        "",
        "",
        "```text",
        "| resource type | count | & <b> |",
        "```",
        "has ``` inside\tand a tab and \x1b[31mcolour\x1b[0m \x07",
        "y" * 400,
        *[f"row {i}" for i in range(100)],
    ]
    path = tmp_path / "preflight.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_summary_is_truncated_safely_for_slack(webhook: Webhook, tmp_path: Path) -> None:
    assert run([*DEPLOY, "--summary-file", str(summary_file(tmp_path))], webhook.url) == 0
    [payload] = webhook.payloads
    block = payload["blocks"][2]["text"]["text"]
    code, _, note = block.rpartition("\n```\n")
    assert note == f"_{notify.TRUNCATED}_"
    lines = code.removeprefix("```\n").split("\n")
    assert lines[:4] == [
        "### Preflight `prod`: passed",
        "",
        "| resource type | count | &amp; &lt;b&gt; |",
        "has `\u200b`\u200b` inside  and a tab and colour",
    ]
    assert lines[4] == "y" * (notify.SUMMARY_LINE_CHARS - 1) + "…"
    assert lines[5:] == [f"row {i}" for i in range(notify.SUMMARY_LINES - 5)]
    assert block.count("```") == 2  # opened once, closed once
    assert len(block) < 3000  # Slack's limit for a section's text


def test_summary_for_teams_skips_blanks_and_says_it_is_cut(webhook: Webhook, tmp_path: Path) -> None:
    assert run([*DEPLOY, "--summary-file", str(summary_file(tmp_path))], webhook.url, "teams") == 0
    [request] = webhook.requests
    assert len(request["body"].encode()) < 28 * 1024  # Teams' message limit
    container = json.loads(request["body"])["attachments"][0]["content"]["body"][-1]
    texts = [item["text"] for item in container["items"]]
    assert texts[0] == "### Preflight `prod`: passed"
    assert texts[1] == "| resource type | count | & <b> |"
    assert "" not in texts
    assert container["items"][0]["fontType"] == "Monospace"
    assert container["items"][-1] == {
        "type": "TextBlock",
        "text": notify.TRUNCATED,
        "isSubtle": True,
        "size": "Small",
        "wrap": True,
    }


def test_a_short_summary_is_whole(webhook: Webhook, tmp_path: Path) -> None:
    path = tmp_path / "s.md"
    path.write_text("### Preflight `dev`: passed\n\nNo violations.\n")
    assert run([*DEPLOY, "--summary-file", str(path)], webhook.url) == 0
    block = webhook.payloads[0]["blocks"][2]["text"]["text"]
    assert block == "```\n### Preflight `dev`: passed\n\nNo violations.\n```"


def test_the_rendered_budget_counts_slack_escapes() -> None:
    lines, cut = notify.fit(["&" * 400] * 5, lambda line: len(notify.slack_escape(line)))
    assert len(lines) == 0 and cut  # 400 ampersands are 2000 characters once escaped
    lines, cut = notify.fit(["a" * 400] * 5, len)
    assert len(lines) == 3 and cut


def test_only_the_top_of_a_huge_summary_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.md"
    path.write_bytes(b"first\n" + b"z" * (notify.SUMMARY_READ_BYTES * 4))
    assert notify.read_summary(path) == (["first"], True)


def test_a_missing_summary_still_notifies(
    webhook: Webhook, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "preflight.md"
    assert run([*DEPLOY, "--summary-file", str(missing)], webhook.url) == 0
    assert len(webhook.payloads[0]["blocks"]) == 2
    out = capsys.readouterr().out
    assert f"::warning::notify: {missing}: No such file or directory; sending without the summary" in out
    assert "notification sent (slack)" in out


# --- the command ----------------------------------------------------------------------------------


def test_the_command_runs_with_the_bare_standard_library(webhook: Webhook) -> None:
    """`python -S` (no site-packages): the notifier works even where the project's install failed."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NO_PROXY": "*",
        notify.WEBHOOK_ENV: webhook.url,
        notify.FORMAT_ENV: "teams",
    }
    command = [sys.executable, "-S", "-m", "delivery.notify", "--event", "approval", "--stack", "prod"]
    result = subprocess.run(
        [*command, "--run-url", RUN_URL], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "notification sent (teams): prod: approval needed to deploy\n"
    card = webhook.payloads[0]["attachments"][0]["content"]
    assert card["body"][0]["text"] == "prod: approval needed to deploy"
    assert card["body"][0]["color"] == "Warning"
