"""`python -m delivery.notify`: tell a chat channel that a deploy, an approval wait or a rollback happened.

    python -m delivery.notify --event deploy --stack prod --status succeeded \\
        --run-url "$RUN_URL" [--commit SHA] [--detail "web 1.4.2"] [--summary-file preflight.md]

The webhook comes from `POUW_NOTIFY_WEBHOOK` (a CI secret); unset or empty, notifications are off and
this prints one line and exits 0. `POUW_NOTIFY_FORMAT` (slack | teams) picks the payload; unset, the
URL's host decides. The URL is a credential: it is never printed, and any error text is redacted.

A notification never fails a deploy: when the webhook cannot be reached (after 2 retries with backoff on
429, 5xx and connection errors) this prints a `::warning::` line (a GitHub annotation; a plain line on
Jenkins) and exits 0. Only invalid usage exits 2: bad arguments, or a webhook whose format cannot be told.

Standard library only, so it runs with any `python3` (even when installing the project's venv failed).
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from email.message import Message
from pathlib import Path
from typing import Any

WEBHOOK_ENV = "POUW_NOTIFY_WEBHOOK"
FORMAT_ENV = "POUW_NOTIFY_FORMAT"
OFF = f"notifications off ({WEBHOOK_ENV} unset)"

EVENTS = ("deploy", "approval", "rollback")
STATUSES = ("started", "succeeded", "failed")
FORMATS = ("slack", "teams")

TIMEOUT = 10.0  # seconds per attempt
BACKOFF = (1.0, 2.0)  # the wait before each retry: 2 retries, 3 attempts
RETRY_AFTER_CAP = 10.0  # a 429's Retry-After is honoured up to this
ERROR_BODY_CHARS = 120  # of a failed response's body, in the warning (Slack says e.g. "no_service")

DETAIL_CHARS = 200
SUMMARY_READ_BYTES = 64 * 1024  # only the top of the file is read
SUMMARY_LINES = 15
SUMMARY_LINE_CHARS = 160
SUMMARY_CHARS = 1500  # as rendered (after Slack's escaping), far below Slack's 3000 per block
TRUNCATED = "… (truncated: the full summary is in the run)"
REDACTED = "<redacted>"

SLACK_HOSTS = ("hooks.slack.com",)
# Power Automate "workflows" webhooks (prod-NN.<region>.logic.azure.com, and the newer
# <env>.environment.api.powerplatform.com); the retired Office 365 connectors (<tenant>.webhook.office.com).
TEAMS_DOMAINS = ("logic.azure.com", "powerplatform.com", "webhook.office.com")
LOOPBACK = ("127.0.0.1", "::1", "localhost")

STACK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")
COMMIT_RE = re.compile(r"[0-9a-fA-F]{7,64}")
RUN_URL_RE = re.compile(r"https?://[^\s<>|\"]+")
CONTROL_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")
FENCE_RE = re.compile(r"\s*(```|~~~)")


class UsageError(Exception):
    """Invalid arguments or configuration: exit 2 with one `error:` line (never containing the URL)."""


class DeliveryError(Exception):
    """The webhook could not be reached or refused the message: a warning, exit 0."""


@dataclasses.dataclass(frozen=True)
class Notification:
    event: str
    stack: str
    status: str  # started | succeeded | failed; "waiting" for an approval
    run_url: str
    commit: str | None = None
    detail: str | None = None
    summary: tuple[str, ...] = ()  # the summary file's first lines, cleaned (see `summary_lines`)
    summary_truncated: bool = False

    @property
    def headline(self) -> str:
        if self.event == "approval":
            return f"{self.stack}: approval needed to deploy"
        if self.event == "rollback":
            return f"ROLLBACK {self.stack}: rollback {self.status}"
        return f"{self.stack}: deploy {self.status}"

    @property
    def short_sha(self) -> str | None:
        return self.commit[:7].lower() if self.commit else None

    @property
    def title(self) -> str:
        """The headline and the detail: what the console prints and a chat preview shows first."""
        return f"{self.headline} — {self.detail}" if self.detail else self.headline

    @property
    def text(self) -> str:
        """One plain line with everything: the chat's notification text and fallback."""
        parts = [self.title]
        if self.short_sha:
            parts.append(f"commit {self.short_sha}")
        parts.append(self.run_url)
        return " · ".join(parts)


# --- arguments ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m delivery.notify",
        description=f"Post a deploy, approval or rollback notification to the webhook in ${WEBHOOK_ENV} "
        f"(off when unset). ${FORMAT_ENV}=slack|teams picks the payload (default: from the URL's host).",
    )
    parser.add_argument("--event", required=True, choices=EVENTS)
    parser.add_argument("--stack", required=True, help="the stack (dev, staging, prod)")
    parser.add_argument(
        "--status", choices=STATUSES, help="deploy and rollback only (an approval is waiting)"
    )
    parser.add_argument("--run-url", required=True, help="link to the CI run")
    parser.add_argument("--commit", help="the commit deployed (shown as its short sha)")
    parser.add_argument("--detail", help="one line, e.g. 'web 1.4.2'")
    parser.add_argument("--summary-file", type=Path, help="a Markdown file whose first lines are included")
    return parser


def notification(args: argparse.Namespace) -> Notification:
    """Checks and normalises the arguments (UsageError); the summary file is read later, when sending."""
    if not STACK_RE.fullmatch(args.stack):
        raise UsageError(f"--stack {args.stack!r}: expected a stack name such as dev, staging or prod")
    if args.event == "approval":
        if args.status is not None:
            raise UsageError("--status is not used with --event approval (an approval is always waiting)")
        status = "waiting"
    elif args.status is None:
        raise UsageError(f"--event {args.event} needs --status ({', '.join(STATUSES)})")
    else:
        status = args.status
    run_url = args.run_url.strip()
    if not RUN_URL_RE.fullmatch(run_url):
        raise UsageError(
            "--run-url must be the http(s) URL of the CI run (GitHub: "
            "$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID; Jenkins: $BUILD_URL)"
        )
    commit = (args.commit or "").strip() or None  # an unset $GIT_COMMIT arrives as ""
    if commit is not None and not COMMIT_RE.fullmatch(commit):
        raise UsageError(f"--commit {commit!r}: expected a git commit sha (7 to 64 hex digits)")
    return Notification(
        event=args.event,
        stack=args.stack,
        status=status,
        run_url=run_url,
        commit=commit,
        detail=one_line(args.detail or "", DETAIL_CHARS) or None,
    )


def one_line(text: str, limit: int) -> str:
    """Control characters out, whitespace (newlines included) collapsed, cut at `limit` with an ellipsis."""
    text = " ".join(CONTROL_RE.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- the summary file -----------------------------------------------------------------------------


def read_summary(path: Path) -> tuple[list[str], bool]:
    """The top of the file, cleaned (`summary_lines`); whether anything was left out. Raises OSError."""
    with path.open("rb") as handle:
        data = handle.read(SUMMARY_READ_BYTES + 1)
    more = len(data) > SUMMARY_READ_BYTES
    text = data[:SUMMARY_READ_BYTES].decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = text.splitlines()
    if more and lines:
        lines.pop()  # the last line read may be cut anywhere
    return summary_lines(lines, more)


def summary_lines(raw: Iterable[str], more: bool = False) -> tuple[list[str], bool]:
    """At most SUMMARY_LINES lines of at most SUMMARY_LINE_CHARS, safe inside a chat code block.

    Code fences are dropped (the summary is shown preformatted as a whole, and an unmatched fence would
    swallow the rest of the message), control characters and ANSI colours removed, tabs expanded, runs of
    blank lines collapsed. The second value says whether lines were left out.
    """
    lines: list[str] = []
    for line in raw:
        if FENCE_RE.match(line):
            continue
        line = CONTROL_RE.sub("", line.expandtabs(4)).rstrip()
        if not line and (not lines or not lines[-1]):
            continue
        if len(lines) == SUMMARY_LINES:
            more = True
            break
        if len(line) > SUMMARY_LINE_CHARS:
            line = line[: SUMMARY_LINE_CHARS - 1].rstrip() + "…"
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return lines, more


def fit(
    lines: Sequence[str], cost: Callable[[str], int], budget: int = SUMMARY_CHARS
) -> tuple[list[str], bool]:
    """The leading lines whose rendered size (`cost`, plus a newline each) stays within `budget`."""
    kept: list[str] = []
    used = 0
    for line in lines:
        used += cost(line) + 1
        if used > budget:
            return kept, True
        kept.append(line)
    return kept, False


# --- payloads -------------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Slack decodes exactly these three entities in mrkdwn and `text`."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(note: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (notifications, fallback) plus Block Kit blocks."""
    lead = f"*{slack_escape(note.headline)}*"
    if note.detail:
        lead += f"\n{slack_escape(note.detail)}"
    context = [f"status: {note.status}"]
    if note.short_sha:
        context.append(f"commit `{note.short_sha}`")
    context.append(f"<{slack_escape(note.run_url)}|open the run>")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": lead}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
    ]
    lines, cut = fit(note.summary, lambda line: len(slack_escape(line)))
    if lines:
        # Inside a code block a "```" in a line would close it early: a zero-width space breaks it up.
        body = "\n".join(slack_escape(line).replace("```", "`\u200b`\u200b`") for line in lines)
        text = f"```\n{body}\n```"
        if cut or note.summary_truncated:
            text += f"\n_{TRUNCATED}_"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    return {"text": slack_escape(note.text), "blocks": blocks}


TEAMS_COLOURS = {
    ("deploy", "started"): "Accent",
    ("deploy", "succeeded"): "Good",
    ("deploy", "failed"): "Attention",
    ("approval", "waiting"): "Warning",
    ("rollback", "started"): "Warning",
    ("rollback", "succeeded"): "Warning",
    ("rollback", "failed"): "Attention",
}


def teams_payload(note: Notification) -> dict[str, Any]:
    """A Teams message for a Power Automate workflow ("When a Teams webhook request is received"): one
    Adaptive Card attachment.

    The envelope (`type: message`, `attachments[].contentType: application/vnd.microsoft.card.adaptive`,
    `contentUrl: null`, `content`: the card) is the one Microsoft documents in "Create and send messages",
    https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using
    (section "Send Adaptive Cards using an Incoming Webhook"), which also says Workflows take Adaptive
    Cards, not the retired Office 365 connectors' MessageCard. Card text is a Markdown subset without
    tables, code blocks or headings ("Format cards in Teams",
    https://learn.microsoft.com/en-us/microsoftteams/platform/task-modules-and-cards/cards/cards-format),
    so the summary is one monospace TextBlock per line. Messages are limited to 28 KB and to 4 requests a
    second per webhook (add-incoming-webhook, same docs): ours stay far below and retry on 429.
    """
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": note.headline,
            "weight": "Bolder",
            "size": "Medium",
            "color": TEAMS_COLOURS[(note.event, note.status)],
            "wrap": True,
        }
    ]
    if note.detail:
        body.append({"type": "TextBlock", "text": note.detail, "wrap": True, "spacing": "Small"})
    facts = [
        {"title": "Stack", "value": note.stack},
        {"title": "Event", "value": note.event},
        {"title": "Status", "value": note.status},
    ]
    if note.short_sha:
        facts.append({"title": "Commit", "value": note.short_sha})
    body.append({"type": "FactSet", "facts": facts})
    lines, cut = fit([line for line in note.summary if line], len)
    if lines:
        mono = {"fontType": "Monospace", "size": "Small", "spacing": "None", "wrap": True}
        items: list[dict[str, Any]] = [{"type": "TextBlock", "text": line, **mono} for line in lines]
        if cut or note.summary_truncated:
            items.append(
                {"type": "TextBlock", "text": TRUNCATED, "isSubtle": True, "size": "Small", "wrap": True}
            )
        body.append({"type": "Container", "separator": True, "items": items})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
        "actions": [{"type": "Action.OpenUrl", "title": "Open the run", "url": note.run_url}],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


PAYLOADS: dict[str, Callable[[Notification], dict[str, Any]]] = {
    "slack": slack_payload,
    "teams": teams_payload,
}


# --- the webhook ----------------------------------------------------------------------------------


def choose_format(url: str, configured: str = "") -> str:
    """`POUW_NOTIFY_FORMAT` when set, otherwise the URL's host; UsageError (without the URL) otherwise."""
    configured = configured.strip().lower()
    if configured:
        if configured not in FORMATS:
            raise UsageError(f"{FORMAT_ENV}={configured!r}: must be slack or teams (or unset to infer it)")
        return configured
    host = (webhook_parts(url).hostname or "").lower().rstrip(".")
    if host in SLACK_HOSTS:
        return "slack"
    if any(host == domain or host.endswith("." + domain) for domain in TEAMS_DOMAINS):
        return "teams"
    raise UsageError(
        f"cannot tell the format of the webhook in {WEBHOOK_ENV} from its host (known: hooks.slack.com; "
        f"*.logic.azure.com, *.powerplatform.com, *.webhook.office.com for Teams): "
        f"set {FORMAT_ENV} to slack or teams"
    )


def webhook_parts(url: str) -> urllib.parse.SplitResult:
    """The parsed URL, checked: https (plain http only to this machine, for tests). Never echoes it."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise UsageError(f"{WEBHOOK_ENV} is not a valid URL (value not shown: it is a secret)") from None
    if not host or parts.scheme not in ("https", "http") or any(c.isspace() for c in url):
        raise UsageError(f"{WEBHOOK_ENV} must be an https:// URL (value not shown: it is a secret)")
    if parts.scheme == "http" and host not in LOOPBACK:
        raise UsageError(f"{WEBHOOK_ENV} must be https://: plain http would send the credential in clear")
    return parts


def redact(text: str, url: str) -> str:
    """`text` without the URL or any part of it that could be the secret (path, query, their pieces)."""
    parts = urllib.parse.urlsplit(url)
    pieces = {url, urllib.parse.unquote(url), url.partition("://")[2], parts.path, parts.query}
    pieces |= {parts.path + "?" + parts.query, urllib.parse.unquote(parts.path)}
    pieces |= set(parts.path.split("/"))
    pieces |= {value for _, value in urllib.parse.parse_qsl(parts.query)}
    if parts.password:
        pieces.add(parts.password)
    for piece in sorted((p for p in pieces if len(p) >= 8), key=len, reverse=True):
        text = text.replace(piece, REDACTED)
    return text


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook answers, it does not redirect: urllib would turn the POST into a bodiless GET (a
    silent "success") and hand the request to another host. A 3xx is reported as a failure instead."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def retry_after(headers: Message | None) -> float | None:
    value = (headers.get("Retry-After") if headers is not None else None) or ""
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # absent, or an HTTP date: use the backoff
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def post(
    url: str,
    body: bytes,
    *,
    timeout: float = TIMEOUT,
    backoff: Sequence[float] = BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> int:
    """POST `body` as JSON; the number of attempts it took. Retries 429, 5xx and connection errors
    (waiting `backoff[i]`, or a 429's Retry-After); DeliveryError after the last attempt or on any
    other answer. Error texts may contain the URL: callers redact them."""
    opener = urllib.request.build_opener(_NoRedirects)  # keeps the proxy settings of the environment
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "pouw-cicd-notify"},
    )
    attempts = len(backoff) + 1
    for attempt in range(1, attempts + 1):
        wait: float | None = None
        try:
            with opener.open(request, timeout=timeout) as response:
                response.read(64 * 1024)
            return attempt
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code} {error.reason}".rstrip()
            answer = _error_body(error)
            if answer:
                problem += f": {answer}"
            if error.code != 429 and error.code < 500:
                raise DeliveryError(f"{problem} (not retried)") from None
            if error.code == 429:
                wait = retry_after(error.headers)
        except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, resets, bad responses
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            if isinstance(reason, str):
                problem = reason
            else:
                problem = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
        if attempt == attempts:
            raise DeliveryError(f"{problem} (after {attempts} attempts)")
        wait = backoff[attempt - 1] if wait is None else wait
        log(f"notify: attempt {attempt} of {attempts} failed ({redact(problem, url)}); retrying in {wait:g}s")
        sleep(wait)
    raise AssertionError("unreachable")


def _error_body(error: urllib.error.HTTPError) -> str:
    try:
        data = error.read(4096)
    except (OSError, http.client.HTTPException):
        return ""
    return one_line(data.decode("utf-8", errors="replace"), ERROR_BODY_CHARS)


def annotation(level: str, message: str) -> str:
    """A GitHub workflow command (`::warning::...`), escaped as the runner expects; on Jenkins a line."""
    escaped = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::{level}::{escaped}"


# --- main -----------------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if env is None else env
    url = env.get(WEBHOOK_ENV, "").strip()
    try:
        note = notification(args)  # checked even when notifications are off: usage errors show early
        if not url:
            print(OFF)
            return 0
        webhook_parts(url)
        fmt = choose_format(url, env.get(FORMAT_ENV, ""))
    except UsageError as error:
        print(f"error: {redact(str(error), url) if url else error}", file=sys.stderr)
        return 2

    if args.summary_file is not None:
        try:
            lines, more = read_summary(args.summary_file)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            print(
                annotation("warning", f"notify: {args.summary_file}: {reason}; sending without the summary")
            )
        else:
            note = dataclasses.replace(note, summary=tuple(lines), summary_truncated=more)

    body = json.dumps(PAYLOADS[fmt](note), ensure_ascii=False).encode("utf-8")
    try:
        attempts = post(url, body, timeout=TIMEOUT, backoff=BACKOFF, sleep=sleep)
    except Exception as error:  # noqa: BLE001 (a notification must never fail the deploy it reports)
        problem = redact(
            f"{error}" if isinstance(error, DeliveryError) else f"{type(error).__name__}: {error}", url
        )
        print(annotation("warning", f"notification not sent ({fmt} webhook from {WEBHOOK_ENV}): {problem}"))
        return 0
    tries = f", after {attempts} attempts" if attempts > 1 else ""
    print(f"notification sent ({fmt}{tries}): {note.title}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
