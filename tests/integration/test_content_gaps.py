"""Content gaps on a realistic case, end to end on real parts: a small docs site for a made-up self-hosted
backup tool ("Burrow") is ingested with the packaged encoders into Qdrant Edge; 60 visitor questions go
through the real chat service (an llm-katan echo LLM behind LiteLLM; a fixed relevance floor on the
dense cosine decides what it declines). Two topics are missing from the docs (pricing
and licensing, mobile apps), ten differently worded questions each, mixed among 40 answerable ones.

Visitors react as they would: an answer to a missing-topic question that the product did not decline
gets a thumbs-down or a request for a person (the echo "answers" by repeating the question, which is no
answer); an agent replies in two of the handed-over conversations; some good answers get a thumbs-up and
one gets a stray thumbs-down. Three pricing questions from a test conversation must not count.

Then the two missing topics must be the top two content gaps, and no answered topic may be a gap.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from integration.katan import KatanServer

from ragbot.analytics.topics import content_gaps, top_questions
from ragbot.db.models import utcnow
from ragbot.runtime import Runtime

pytestmark = pytest.mark.integration

MISSING = ("pricing", "mobile")

#: The docs site: file name -> content. Nothing in it says what Burrow costs or whether it has apps.
PAGES: dict[str, str] = {
    "index.md": """# Burrow documentation

Burrow is a self-hosted backup tool for Linux servers. It takes encrypted, deduplicated snapshots of
folders and databases and stores them on a local disk, an SFTP server or object storage.

## Features
- Incremental snapshots with content-defined deduplication and zstd compression.
- Client-side AES-256-GCM encryption: data is encrypted before it leaves the server.
- Schedules, retention policies and pruning of old snapshots.
- Hooks to dump PostgreSQL and MySQL databases before a backup.
- Email and webhook notifications when a backup fails.

Start with the installation guide, then configure a repository and a schedule.
""",
    "installation.md": """# Installing Burrow

Burrow runs on 64-bit Linux: Debian 12, Ubuntu 22.04 and 24.04, Rocky Linux 9 and Fedora 40.
It needs 512 MB of RAM and about 100 MB of disk for the program and its cache.

## Debian and Ubuntu
Add the package repository, then run `sudo apt install burrow`. The package installs the `burrow`
command and a systemd service called `burrow-agent`.

## Docker
Run the official image: `docker run -v /srv:/data -v burrow-cache:/cache burrow/burrow`. Mount every
folder you want to back up into the container.

## Check the installation
Run `burrow version` to print the installed version and `burrow doctor` to check permissions.
""",
    "configuration.md": """# Configuration

Burrow reads `/etc/burrow/burrow.toml`. The main sections are `[repository]` (where snapshots are
stored), `[[source]]` (the folders to back up), `[schedule]` and `[retention]`.

```toml
[repository]
url = "sftp://backup@nas.local/burrow"
password_file = "/etc/burrow/passphrase"

[[source]]
path = "/srv/www"
exclude = ["*.tmp", "cache/"]
```

Environment variables override the file: `BURROW_REPOSITORY`, `BURROW_PASSWORD_FILE`, `BURROW_CACHE_DIR`.
""",
    "scheduling.md": """# Scheduling backups

Set `[schedule] when = "daily 02:00"` in burrow.toml and the `burrow-agent` service runs the backup
every night at 2 am. Other forms: `"hourly"`, `"every 6h"`, `"weekly sun 03:30"`.

## systemd timers
If you prefer systemd timers, disable the agent's schedule and enable `burrow-backup.timer`, which
calls `burrow backup` at the time set in `OnCalendar=`.

A backup that is still running when the next one is due is skipped, never started twice.
""",
    "restore.md": """# Restoring files

List the snapshots with `burrow snapshots`. Each has an id, a time and the host it came from.

Restore a whole snapshot with `burrow restore SNAPSHOT_ID --target /restore`. Use `latest` instead
of an id for the most recent snapshot.

## Restore a single file or folder
Add `--include /srv/www/index.html` (repeatable) to restore only some paths. Without `--target` the
files go back to their original location; existing files are not overwritten unless you add
`--overwrite`.

## Browse a snapshot
`burrow mount /mnt/burrow` mounts every snapshot as a read-only folder, so you can copy files out with
any file manager.
""",
    "encryption.md": """# Encryption

Every snapshot is encrypted on the client with AES-256-GCM before it is uploaded; the storage never
sees plain data or file names. The key is derived from the repository passphrase with Argon2id.

## Losing the passphrase
There is no recovery: without the passphrase (or an exported key file) the data cannot be decrypted.
Export a key file with `burrow key export` and keep it somewhere safe.

## Rotating keys
`burrow key add` adds a new passphrase and `burrow key remove` removes the old one. The master key is
not re-encrypted data-wide, so rotation takes seconds.
""",
    "retention.md": """# Retention and pruning

Old snapshots are removed by the retention policy in `[retention]`:

```toml
[retention]
keep_daily = 7
keep_weekly = 4
keep_monthly = 12
```

`keep_daily = 7` keeps the last snapshot of each of the last seven days. `burrow prune` applies the
policy and deletes the data no remaining snapshot uses; the agent runs it after each scheduled backup.
""",
    "storage.md": """# Storage backends

A repository can live on:
- a local disk or NFS mount (`/mnt/backup/burrow`);
- an SFTP server (`sftp://user@host/path`);
- S3-compatible object storage: Amazon S3, MinIO, Wasabi (`s3://bucket/prefix`);
- Backblaze B2 (`b2://bucket/prefix`).

Credentials for S3 and B2 come from the usual environment variables (`AWS_ACCESS_KEY_ID`,
`B2_ACCOUNT_ID`) or from `[repository.credentials]`.
""",
    "deduplication.md": """# Deduplication and compression

Files are split into variable-size chunks with content-defined chunking; a chunk already stored in the
repository is never uploaded again, even if it comes from another file or another server. Chunks are
compressed with zstd (level 3 by default, `compression = "zstd:9"` for smaller archives).
""",
    "databases.html": """<!doctype html>
<html><head><title>Backing up databases</title></head>
<body><h1>Backing up databases</h1>
<p>Databases should not be copied as raw files while they run. Burrow runs a pre-backup hook that dumps
the database, backs up the dump, and deletes it afterwards.</p>
<h2>PostgreSQL</h2>
<p>Add <code>[[hook]] before = "pg_dump -Fc mydb -f /var/backups/mydb.dump"</code> and include
<code>/var/backups</code> as a source.</p>
<h2>MySQL and MariaDB</h2>
<p>Use <code>mysqldump --single-transaction</code> in a <code>before</code> hook the same way.</p>
<h2>How hooks work</h2>
<p>A <code>before</code> hook runs before the snapshot starts; if it exits with an error the backup is
aborted and reported as failed. An <code>after</code> hook runs when the snapshot is done.</p>
</body></html>
""",
    "notifications.md": """# Notifications

Burrow can tell you when a backup fails or succeeds.

```toml
[notify]
email = "ops@example.org"
on = ["failure"]
webhook = "https://chat.example.org/hooks/backup"
```

Email needs an SMTP server in `[notify.smtp]`. The webhook receives a JSON document with the snapshot
id, the duration and the error, after every backup or only on failure.
""",
    "troubleshooting.html": """<!doctype html>
<html><head><title>Troubleshooting</title></head>
<body><h1>Troubleshooting</h1>
<h2>repository is locked</h2>
<p>Another Burrow process holds the repository lock, or one crashed. Check with
<code>burrow locks</code>; remove a stale lock with <code>burrow unlock</code>.</p>
<h2>permission denied</h2>
<p>Backing up system folders such as <code>/etc</code> needs root: run the agent as root or give the
burrow user read access.</p>
<h2>Checking a repository</h2>
<p><code>burrow check</code> verifies the repository structure; <code>burrow check --read-data</code>
also reads every chunk to detect corruption on the storage.</p>
</body></html>
""",
}

#: What visitors ask: topic -> differently worded questions.
QUESTIONS: dict[str, list[str]] = {
    "install": [
        "How do I install Burrow on Ubuntu?",
        "What are the system requirements for running Burrow?",
        "Can I run Burrow in Docker?",
        "Which Linux distributions does Burrow support?",
        "How do I check that the installation worked?",
    ],
    "schedule": [
        "How do I schedule a nightly backup?",
        "Can backups run automatically every day at 2am?",
        "How do I use a systemd timer for Burrow backups?",
        "What does the schedule setting in burrow.toml do?",
        "How can I make backups run every hour?",
    ],
    "restore": [
        "How do I restore a deleted file from a snapshot?",
        "How can I recover my data from a backup?",
        "Can I restore a single folder instead of the whole snapshot?",
        "How do I restore files to a different directory?",
        "How do I list the snapshots I can restore from?",
        "What is the command to restore the latest backup?",
    ],
    "encryption": [
        "Are my backups encrypted?",
        "Which encryption algorithm does Burrow use?",
        "What happens if I lose my repository passphrase?",
        "How do I rotate the encryption key?",
        "Is the data encrypted before it leaves my server?",
    ],
    "retention": [
        "How do I delete old snapshots automatically?",
        "How does the keep_daily retention setting work?",
        "How can I keep 7 daily and 4 weekly backups?",
        "What does burrow prune do?",
    ],
    "storage": [
        "Can I store backups on Amazon S3?",
        "Does Burrow support SFTP as a backup target?",
        "Which storage backends are supported?",
        "How do I back up to a Backblaze B2 bucket?",
    ],
    "databases": [
        "How do I back up a PostgreSQL database with Burrow?",
        "Can Burrow dump MySQL before the backup runs?",
        "How do pre-backup hooks work?",
    ],
    "notifications": [
        "How do I get an email when a backup fails?",
        "Can Burrow send a webhook after each backup?",
        "How do I configure failure alerts?",
    ],
    "troubleshooting": [
        "What does the error 'repository is locked' mean?",
        "Why do I get permission denied when backing up /etc?",
        "How do I check a repository for corruption?",
    ],
    "dedup": [
        "How does deduplication work in Burrow?",
        "Does Burrow compress backups?",
    ],
    "pricing": [
        "How much does Burrow cost?",
        "Is there a free version of Burrow?",
        "What is the price of the Business plan?",
        "Do you offer discounts for nonprofits?",
        "How much is a license for 10 servers?",
        "Is Burrow open source or do I need to buy a license?",
        "Can I pay monthly instead of yearly?",
        "What does the enterprise subscription cost?",
        "Do I need a paid license for commercial use?",
        "Where can I see your pricing?",
    ],
    "mobile": [
        "Is there a Burrow app for iPhone?",
        "Can I check my backups from my Android phone?",
        "Do you have a mobile app?",
        "Is there an iOS app to monitor backup status?",
        "Can I get push notifications on my phone when a backup finishes?",
        "Where can I download the Burrow mobile app?",
        "Does Burrow have an app for tablets?",
        "Is there a smartphone app for managing Burrow?",
        "Can I use Burrow on my Android tablet?",
        "Is the Burrow dashboard available as a mobile application?",
    ],
}
#: Asked from a test (preview) conversation: never counted.
TEST_TRAFFIC = ["How much does Burrow cost per year?", "Is Burrow free?", "Burrow price list?"]
AGENT_REPLIES = {
    "pricing": "Burrow is free and open source (AGPL-3.0). The Business plan adds support and a web "
    "console for $9 per server per month, billed monthly or yearly; nonprofits get 50% off.",
    "mobile": "There is no mobile app yet. You can get failure alerts on your phone through the webhook "
    "notifications (for example into Slack or ntfy); an iOS/Android app is on the roadmap.",
}
#: The echo model repeats the visitor's message, so a marker in it is a marker the "model" wrote: every
#: answer the product lets through then cites passage 1, as a model that always cites something would.
#: Every question carries it, answerable or not: whether a question is answered at all is the product's
#: relevance floor's decision, not the test's. The marker steers the stand-in model only; it is removed
#: from the stored questions afterwards (``_unmark``), so analytics sees what visitors typed.
CITE = " [1]"


@dataclass
class Traffic:
    runtime: Any
    bot_id: str
    since: datetime
    until: datetime
    topic_of: dict[str, str] = field(default_factory=dict)  # conversation id -> topic
    status_of: dict[str, str] = field(default_factory=dict)  # conversation id -> the bot answer's status
    handed_off: list[str] = field(default_factory=list)
    thumbs_down: list[str] = field(default_factory=list)

    def majority(self, conversation_ids: list[str]) -> tuple[str, int]:
        topic, n = Counter(self.topic_of.get(c, "?") for c in conversation_ids).most_common(1)[0]
        return topic, n


def _write_site(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in PAGES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def make_traffic(data: Path, sparse: Any, dense: Any, katan: KatanServer) -> Traffic:
    """Ingest the site into a fresh deployment and replay the visitors (see the module docstring)."""
    from connectors.files import FileConnector
    from ragbot.config import Settings
    from ragbot.handoff.states import Reason
    from ragbot.index.edge import EdgeIndex
    from ragbot.runtime import Runtime

    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'ragbot.db'}",
        llm_model="openai/katan-echo",
        llm_api_base=katan.base_url,
        llm_api_key="sk-test",
        llm_max_retries=0,
        # The echo "answers" only repeat the question: verified, none would ever be shown. The analytics
        # under test read declines, thumbs and handoffs, so the turns keep the plain fixed floor and the
        # echo text (tests/integration/test_grounding.py covers the grounded path).
        min_relevance=0.20,
        grounding="off",
    )
    runtime = Runtime(
        settings, index=EdgeIndex(data / "edge", "ragbot"), sparse_encoder=sparse, dense_encoder=dense
    )
    bot = runtime.bots.create("Burrow docs", actor="tests")
    bot_id = bot["id"]
    site = _write_site(data / "site")
    report = runtime.ingest_service.ingest(bot_id, FileConnector(str(site), max_bytes=1 << 20))
    assert report.added == len(PAGES), report

    since = utcnow() - timedelta(minutes=1)
    traffic = Traffic(runtime, bot_id, since, since)
    asked = [(topic, q) for topic, questions in QUESTIONS.items() for q in questions]
    random.Random(2024).shuffle(asked)
    chat = runtime.chat_service
    for n, (topic, question) in enumerate(asked):
        visitor = f"visitor-{n}"
        turn = chat.ask(bot_id, question + CITE, visitor_id=visitor)
        conv = turn.conversation_id
        traffic.topic_of[conv] = topic
        traffic.status_of[conv] = turn.status
        grounded = turn.status == "complete" and bool(turn.citations)
        if topic in MISSING:
            if grounded:
                # The "answer" only repeats the question. Most visitors say so; one in five just leaves.
                if n % 5 == 0:
                    pass
                elif n % 2:
                    runtime.feedback.rate(bot_id, turn.message_id, "down", rater=visitor)
                    traffic.thumbs_down.append(conv)
                else:
                    runtime.handoff.request(bot_id, conv, reason=Reason.VISITOR_REQUEST, actor="visitor")
                    traffic.handed_off.append(conv)
            elif n % 3 == 0:  # declined: some ask for a person
                runtime.handoff.request(bot_id, conv, reason=Reason.VISITOR_REQUEST, actor="visitor")
                traffic.handed_off.append(conv)
        elif grounded and n % 3 == 0:
            runtime.feedback.rate(bot_id, turn.message_id, "up", rater=visitor)
    # a stray thumbs-down on a good answer: one unhappy visitor does not make a topic a gap
    stray = next(c for c, t in traffic.topic_of.items() if t == "restore")
    with runtime.session_factory() as s:
        from sqlalchemy import select

        from ragbot.db.models import Message

        answer = s.scalars(
            select(Message.id).where(Message.conversation_id == stray, Message.sender_type == "bot")
        ).first()
    assert answer is not None
    runtime.feedback.rate(bot_id, answer, "down", rater="grumpy-visitor")
    # agents answer one handed-over conversation of each missing topic
    for topic, reply in AGENT_REPLIES.items():
        conv = next((c for c in traffic.handed_off if traffic.topic_of[c] == topic), None)
        if conv is not None:
            runtime.handoff.reply(bot_id, conv, actor="Alice", content=reply)
    # preview traffic about pricing: must not count
    test_conv = None
    for question in TEST_TRAFFIC:
        test_conv = chat.ask(bot_id, question + CITE, test_conv, is_test=True).conversation_id
    _unmark(runtime)
    traffic.until = utcnow() + timedelta(minutes=1)
    return traffic


def _unmark(runtime: Any) -> None:
    """Take the stand-in model's steering marker out of the stored questions and their standalone forms."""
    from sqlalchemy import func, update

    from ragbot.db.models import Message

    with runtime.session_factory() as s:
        for sender, column in (("visitor", Message.content), ("bot", Message.standalone_query)):
            s.execute(
                update(Message)
                .where(Message.sender_type == sender, column.like("%" + CITE))
                .values({column: func.substr(column, 1, func.length(column) - len(CITE))})
            )
        s.commit()


@pytest.fixture(scope="module")
def traffic(
    tmp_path_factory: pytest.TempPathFactory, real_sparse_encoder: Any, real_dense_encoder: Any
) -> Iterator[Traffic]:
    data = tmp_path_factory.mktemp("content-gaps")
    with KatanServer(log_dir=data) as katan:
        made = make_traffic(data, real_sparse_encoder, real_dense_encoder, katan)
        try:
            yield made
        finally:
            made.runtime.close()


def _describe(traffic: Traffic) -> str:
    """What the product did with each topic's questions (printed: it is part of what this test shows)."""
    lines = []
    for topic in QUESTIONS:
        statuses = Counter(s for c, s in traffic.status_of.items() if traffic.topic_of[c] == topic)
        lines.append(f"  {topic:16s} {dict(statuses)}")
    return "\n".join(lines)


def test_the_two_missing_topics_are_the_top_two_content_gaps(traffic: Traffic) -> None:
    gaps = content_gaps(traffic.runtime, traffic.bot_id, traffic.since, traffic.until)
    print("\nbot answers per topic:\n" + _describe(traffic))
    print("content gaps:")
    for rank, gap in enumerate(gaps, 1):
        topic, n = traffic.majority(gap["conversation_ids"])
        print(
            f"  {rank}. score {gap['score']:g} ({gap['failed']}/{gap['count']} failed, {topic} x{n}) "
            f"{gap['representative']!r} reasons={gap['reasons']}"
        )
    assert len(gaps) >= 2, gaps
    top = [traffic.majority(g["conversation_ids"]) for g in gaps[:2]]
    assert {topic for topic, _ in top} == set(MISSING), top
    for (topic, n), gap in zip(top, gaps[:2], strict=True):
        assert n >= 5, f"the {topic} gap holds only {n} of its 10 questions: {gap['examples']}"
        assert n / gap["count"] >= 0.8, gap  # and little else
        assert gap["failure_rate"] >= 0.8 and gap["examples"], gap


def test_no_answered_topic_is_a_content_gap(traffic: Traffic) -> None:
    gaps = content_gaps(traffic.runtime, traffic.bot_id, traffic.since, traffic.until, limit=200)
    for gap in gaps:
        topic, _ = traffic.majority(gap["conversation_ids"])
        assert topic in MISSING, f"answered topic {topic!r} listed as a gap: {gap}"


def test_a_gap_carries_the_agent_reply_that_resolved_it(traffic: Traffic) -> None:
    gaps = content_gaps(traffic.runtime, traffic.bot_id, traffic.since, traffic.until)
    replied = {traffic.topic_of[c] for c in traffic.handed_off}
    for gap in gaps[:2]:
        topic, _ = traffic.majority(gap["conversation_ids"])
        if topic in replied:
            assert gap["agent_reply"] == AGENT_REPLIES[topic], gap
            assert traffic.topic_of[gap["agent_reply_conversation_id"]] == topic
    assert replied, "no missing-topic conversation was handed to a person"
    assert all(e["outcome"] for g in gaps for e in g["examples"])  # examples are failed asks


def test_top_questions_group_by_meaning_without_test_traffic(traffic: Traffic) -> None:
    items = top_questions(traffic.runtime, traffic.bot_id, traffic.since, traffic.until, limit=200)
    asked = sum(len(q) for q in QUESTIONS.values())
    assert sum(i["count"] for i in items) == asked  # the three preview questions are not there
    assert not {i["representative"] for i in items} & set(TEST_TRAFFIC)
    assert not any(CITE in q for i in items for q in i["questions"])
    print("\ntop questions:")
    by_topic: dict[str, dict[str, Any]] = {}
    for item in items:
        topic, n = traffic.majority(item["conversation_ids"])
        by_topic.setdefault(topic, item)
        sources = [s["title"] for s in item["sources"]]
        rate = f"{item['answer_rate']:.0%}"
        print(f"  {item['count']:3d} answered {rate} {topic} x{n} {item['representative']!r} {sources}")
    restore = by_topic["restore"]
    assert restore["answer_rate"] >= 0.5, restore
    assert "Restoring files" in [s["title"] for s in restore["sources"]], restore["sources"]
    # each content gap is also a top question of its own, with the same count
    gaps = content_gaps(traffic.runtime, traffic.bot_id, traffic.since, traffic.until)
    counts = {i["id"]: i["count"] for i in items}
    assert all(counts.get(g["id"]) == g["count"] for g in gaps), (gaps, counts)
    assert items == sorted(items, key=lambda i: -i["count"])
    assert all(
        set(i) >= {"id", "representative", "count", "answer_rate", "feedback", "sources"} for i in items
    )


def test_report_route_serves_a_self_contained_page(traffic: Traffic) -> None:
    from ragbot.api.app import create_app

    app = create_app(runtime=traffic.runtime, warmup=False)
    with TestClient(app) as client:
        assert client.get("/v1/analytics/report").status_code == 401
        headers = admin_headers(traffic.runtime, bot_id=traffic.bot_id)
        res = client.get("/v1/analytics/report", params={"since": "1h"}, headers=headers)
        assert res.status_code == 200, res.text
        assert res.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in res.headers["content-security-policy"]
        html = res.text
        assert html.count("<svg") >= 3 and 'data-testid="content-gaps-table"' in html
        links = set(re.findall(r"https?://[^\s\"'<>]+", html))
        css = "http://testserver/v1/analytics/report.css"  # its own stylesheet, for the inbox (see report.py)
        assert css in links, links
        assert all(u.startswith("http://testserver/agent#conversation=") for u in links - {css}), links
        assert "<script" not in html.lower()
        style = client.get("/v1/analytics/report.css")
        assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
        assert ".figures" in style.text
        other = client.get(
            "/v1/analytics/report", params={"bot_id": "someone-else"}, headers=headers
        ).status_code
        assert other == 403
        # the JSON view answers from the same functions
        gaps = client.get("/v1/analytics/content-gaps", params={"since": "1h"}, headers=headers)
        assert gaps.status_code == 200, gaps.text
        assert traffic.majority(gaps.json()["items"][0]["conversation_ids"])[0] in MISSING


def test_report_job_builds_the_report_off_the_request_path(traffic: Traffic) -> None:
    from ragbot.api.app import create_app

    # An API process that leaves jobs to workers (RAGBOT_API_RUNS_JOBS=false): the job waits in the queue.
    api = Runtime(
        traffic.runtime.settings.model_copy(update={"api_runs_jobs": False}),
        engine=traffic.runtime.engine,
        session_factory=traffic.runtime.session_factory,
        sparse_encoder=traffic.runtime.sparse_encoder,
        dense_encoder=traffic.runtime.dense_encoder,
        index=traffic.runtime.index,
    )
    with TestClient(create_app(runtime=api, warmup=False)) as client:
        assert client.post("/v1/analytics/reports", json={}).status_code == 401
        headers = admin_headers(api, bot_id=traffic.bot_id)
        queued = client.post("/v1/analytics/reports", json={"since": "1h", "limit": 5}, headers=headers)
        assert queued.status_code == 202, queued.text
        job = queued.json()
        assert (job["kind"], job["status"]) == ("report", "queued")
        assert client.get(f"/v1/analytics/reports/{job['id']}", headers=headers).status_code == 202
        early = client.get(f"/v1/analytics/reports/{job['id']}/html", headers=headers)
        assert early.status_code == 409 and early.json()["error"]["code"] == "report_not_ready"

        assert traffic.runtime.jobs.run_once()  # a worker takes it

        done = client.get(f"/v1/analytics/reports/{job['id']}", headers=headers)
        assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
        page = client.get(f"/v1/analytics/reports/{job['id']}/html", headers=headers)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]  # as the live report's
        assert page.text.count("<svg") >= 3 and 'data-testid="content-gaps-table"' in page.text
        assert done.json()["report"]["bytes"] == len(page.content)
        # unknown ids, ingest jobs and other bots' jobs are not report jobs of this key
        assert client.get("/v1/analytics/reports/nope", headers=headers).status_code == 404
        ingest = api.jobs.submit(traffic.bot_id, "/nonexistent")
        assert client.get(f"/v1/analytics/reports/{ingest.id}", headers=headers).status_code == 404
        other = client.get(f"/v1/analytics/reports/{job['id']}", params={"bot_id": "x"}, headers=headers)
        assert other.status_code == 403
        bad = client.post("/v1/analytics/reports", json={"since": "yesterday-ish"}, headers=headers)
        assert bad.status_code == 422
