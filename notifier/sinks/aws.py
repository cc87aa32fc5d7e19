"""The AWS sink: SQS queues (``sqs://``), SNS topics (``sns://``) and EventBridge buses
(``eventbridge://``), each answered per message, sent in batches.

Credentials, region and endpoint come from the standard AWS environment and config files
(``AWS_ENDPOINT_URL`` points them at an emulator). One aiobotocore client per (service,
region), shared by every subscription; botocore's own retries are off, since the engine
owns the retry schedule.

The engine hands over one delivery at a time, many at once. Those to one target that
come within ``LINGER_SECONDS`` of each other, up to the services' ten entries and 256 KiB,
go as one SendMessageBatch, PublishBatch or PutEvents request; each delivery gets its own
entry's answer, so a partly failed batch fails only its failed entries.

FIFO queues and topics (``.fifo``): the ``MessageGroupId`` is the delivery's ordering key
(an ordered subscription's), else one group per subscription; the ``MessageDeduplicationId`` is the
event id, so a message sent again within the service's five-minute window is dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiobotocore.client import AioBaseClient
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from notifier.envelope import Envelope
from notifier.sinks.base import Attempt, Destination, Outcome, Result
from notifier.sinks.clients import CONNECT_SHARE, Clients, Unreachable
from notifier.sinks.message import CONTENT_TYPE, cloudevents_attributes
from notifier.sinks.registry import SinkOptions
from notifier.sinks.targets import AwsTarget, InvalidTarget, parse

Entry = dict[str, Any]
ClientKey = tuple[str, str | None]  # (service, region)

MAX_ENTRIES = 10  # SendMessageBatch, PublishBatch and PutEvents alike
MAX_BATCH_BYTES = 256 * 1024
ENTRY_OVERHEAD = 512  # bytes an entry may take besides its body, counted against the cap
# How long the first delivery to a target waits for others to share its request.
LINGER_SECONDS = 0.005
# The MessageGroupId of a FIFO message whose subscription has no ordering key: one group
# per subscription (by its id), so the queue keeps the order each one sent them in.
FIFO_GROUP = "notifier-subscription-{}"
_GROUP_ID = re.compile(r"[!-~]{1,128}")  # what SQS and SNS accept as a MessageGroupId
THROTTLED = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "Throttled",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "KMSThrottlingException",
    }
)
# What each service answers when the queue, topic or bus does not exist.
NOT_FOUND = {
    "sqs": ("queue", {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}),
    "sns": ("topic", {"NotFound", "NotFoundException"}),
    "eventbridge": ("bus", {"ResourceNotFoundException"}),
}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def make(options: SinkOptions) -> AwsSink:
    return AwsSink(options)


@dataclass(frozen=True, slots=True)
class Answer:
    """What became of one entry of a batch."""

    result: Result
    code: str
    detail: str


def group_id(key: str | None, subscription_id: int) -> str:
    """A FIFO ``MessageGroupId``: the ordering key, or, when it is not one SQS and SNS
    accept (too long, not printable ASCII), a digest of it (still one group per key);
    without a key, one group for the subscription."""
    if key is None:
        return FIFO_GROUP.format(subscription_id)
    if _GROUP_ID.fullmatch(key):
        return key
    return "sha256-" + hashlib.sha256(key.encode()).hexdigest()


def message_attributes(envelope: Envelope, source: str) -> dict[str, dict[str, str]]:
    """The CloudEvents attributes (``ce_id``, ...) and the content type, as SQS and SNS
    message attributes."""
    attributes = {f"ce_{k}": v for k, v in cloudevents_attributes(envelope, source).items()}
    attributes["content-type"] = CONTENT_TYPE
    return {name: {"DataType": "String", "StringValue": v} for name, v in attributes.items()}


def error_name(code: str) -> str:
    """``AWS.SimpleQueueService.NonExistentQueue`` -> ``non_existent_queue``."""
    name = code.rpartition(".")[2].removesuffix("Exception")
    return _CAMEL.sub("_", name).lower() or "error"


class Batcher:
    """Entries for one target, sent by ``send`` in batches of at most ``MAX_ENTRIES`` and
    ``MAX_BATCH_BYTES``, the first entry waiting at most ``linger`` seconds for others.
    ``send`` answers each entry, in order."""

    def __init__(
        self, send: Callable[[list[Entry]], Awaitable[list[Answer]]], linger: float
    ) -> None:
        self._send = send
        self._linger = linger
        self._entries: list[Entry] = []
        self._futures: list[asyncio.Future[Answer]] = []
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def add(self, entry: Entry, size: int) -> asyncio.Future[Answer]:
        if self._entries and self._bytes + size > MAX_BATCH_BYTES:
            self._flush()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._entries.append(entry)
        self._futures.append(future)
        self._bytes += size
        if len(self._entries) >= MAX_ENTRIES:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._linger, self._flush)
        return future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        entries, futures = self._entries, self._futures
        self._entries, self._futures, self._bytes = [], [], 0
        if entries:
            task = asyncio.create_task(self._answer(entries, futures), name="aws-batch")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _answer(self, entries: list[Entry], futures: list[asyncio.Future[Answer]]) -> None:
        try:
            answers = await self._send(entries)
        except Exception as exc:  # every waiting delivery must hear something
            answers = [Answer(Result.CRASHED, type(exc).__name__, "")] * len(entries)
        if len(answers) != len(futures):
            answers = [Answer(Result.CRASHED, "aws_unanswered", "no answer for the entry")] * len(
                futures
            )
        for future, answer in zip(futures, answers, strict=True):
            if not future.done():  # its delivery may have timed out and gone
                future.set_result(answer)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for future in self._futures:
            future.cancel()
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)


class AwsSink:
    """Delivers to ``sqs://``, ``sns://`` and ``eventbridge://`` targets."""

    def __init__(self, options: SinkOptions) -> None:
        self._timeout = options.timeout_seconds
        self._source = options.source
        self._max_connections = options.max_connections
        self._session: AioSession = get_session()
        self._clients: Clients[ClientKey, AioBaseClient] = Clients(
            self._connect,
            _close,
            attempt_timeout=options.timeout_seconds,
            describe=lambda key: f"{key[0]} ({key[1] or 'default region'})",
        )
        self._batchers: dict[str, tuple[AwsTarget, Batcher]] = {}
        self._queue_urls: dict[tuple[str, str], str] = {}  # (region, queue name) -> URL

    async def _connect(self, key: ClientKey) -> AioBaseClient:
        service, region = key
        config = AioConfig(
            connect_timeout=self._timeout * CONNECT_SHARE,
            read_timeout=self._timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=self._max_connections,
        )
        context = self._session.create_client(service, region_name=region, config=config)
        client: AioBaseClient = await context.__aenter__()
        return client

    async def close(self) -> None:
        for _target, batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
        await self._clients.close()

    async def deliver(self, destination: Destination, envelope: Envelope) -> Outcome:
        """Hand the event to its target's next batch and wait for its entry's answer."""
        attempt = Attempt()
        url = destination.target
        try:
            target, batcher = self._batcher(url)
        except InvalidTarget as exc:  # stored URLs were checked: this one no longer parses
            return attempt.failed(Result.REJECTED, str(exc), "aws_invalid_target")
        entry = self._entry(target, destination, envelope)
        future = batcher.add(entry, len(envelope.body) + ENTRY_OVERHEAD)
        try:
            async with asyncio.timeout(self._timeout):
                answer = await future
        except TimeoutError:
            return attempt.failed(Result.TIMEOUT, f"no answer within {self._timeout:g} s")
        if answer.result is Result.SUCCEEDED:
            return attempt.succeeded(answer.code, answer.detail)
        return attempt.failed(answer.result, answer.detail, answer.code)

    def _batcher(self, url: str) -> tuple[AwsTarget, Batcher]:
        found = self._batchers.get(url)
        if found is None:
            scheme = url.partition("://")[0].lower()
            target = parse(url)
            assert isinstance(target, AwsTarget)

            async def send(entries: list[Entry]) -> list[Answer]:
                return await self._send(scheme, target, entries)

            found = self._batchers[url] = (target, Batcher(send, LINGER_SECONDS))
        return found

    def _entry(self, target: AwsTarget, destination: Destination, envelope: Envelope) -> Entry:
        body = envelope.body.decode()
        if target.service == "events":
            return {
                "Source": target.source or self._source,
                "DetailType": envelope.type,
                "Detail": body,
                "EventBusName": target.name,
                "Time": envelope.created_at,
            }
        entry: Entry = {
            ("MessageBody" if target.service == "sqs" else "Message"): body,
            "MessageAttributes": message_attributes(envelope, self._source),
        }
        if target.fifo:
            entry["MessageGroupId"] = group_id(destination.key, destination.subscription_id)
            entry["MessageDeduplicationId"] = str(envelope.id)
        return entry

    async def _send(self, scheme: str, target: AwsTarget, entries: list[Entry]) -> list[Answer]:
        """One request for ``entries``; a failed request is the answer of each entry."""
        try:
            async with asyncio.timeout(self._timeout):
                client = await self._clients.get((target.service, target.region))
                if target.service == "sqs":
                    return await self._send_sqs(client, target, entries)
                if target.service == "sns":
                    response = await client.publish_batch(
                        TopicArn=target.name, PublishBatchRequestEntries=_with_ids(entries)
                    )
                    return _batch_answers(scheme, entries, response)
                response = await client.put_events(Entries=entries)
                return _event_answers(response.get("Entries", []), len(entries))
        except Unreachable as exc:
            answer = Answer(Result.CONNECTION_ERROR, "connection_error", str(exc))
        except (TimeoutError, ReadTimeoutError, ConnectTimeoutError):
            answer = Answer(Result.TIMEOUT, "timeout", f"no answer within {self._timeout:g} s")
        except ClientError as exc:
            region = target.region or self._session.get_config_variable("region")
            answer = _client_error(scheme, target.name, region, exc)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            answer = Answer(Result.UNAVAILABLE, "aws_no_credentials", type(exc).__name__)
        except BotoCoreError as exc:  # connection refused, reset, closed, DNS
            answer = Answer(Result.CONNECTION_ERROR, "connection_error", type(exc).__name__)
        return [answer] * len(entries)

    async def _send_sqs(
        self, client: AioBaseClient, target: AwsTarget, entries: list[Entry]
    ) -> list[Answer]:
        key = (client.meta.region_name, target.name)
        queue_url = self._queue_urls.get(key)
        if queue_url is None:
            found = await client.get_queue_url(QueueName=target.name)
            queue_url = self._queue_urls[key] = str(found["QueueUrl"])
        try:
            response = await client.send_message_batch(
                QueueUrl=queue_url, Entries=_with_ids(entries)
            )
        except ClientError:
            self._queue_urls.pop(key, None)  # the queue may be gone: ask for its URL again
            raise
        return _batch_answers("sqs", entries, response)


def _with_ids(entries: list[Entry]) -> list[Entry]:
    return [{"Id": str(index), **entry} for index, entry in enumerate(entries)]


def _entry_failure(scheme: str, code: str, message: str) -> Answer:
    if code in THROTTLED:
        return Answer(Result.CONNECTION_ERROR, f"{scheme}_throttled", f"{code}: {message}"[:200])
    return Answer(Result.REJECTED, f"{scheme}_{error_name(code)}", message[:200])


def _batch_answers(scheme: str, entries: list[Entry], response: dict[str, Any]) -> list[Answer]:
    """SendMessageBatch's and PublishBatch's answers (``Successful`` and ``Failed`` entries
    by ``Id``), in the order of ``entries``."""
    answers: dict[str, Answer] = {}
    for ok in response.get("Successful", []):
        sequence = f" sequence {ok['SequenceNumber']}" if ok.get("SequenceNumber") else ""
        answers[ok["Id"]] = Answer(
            Result.SUCCEEDED, f"{scheme}_ok", f"message {ok['MessageId']}{sequence}"
        )
    for failed in response.get("Failed", []):
        answers[failed["Id"]] = _entry_failure(
            scheme, str(failed.get("Code", "")), str(failed.get("Message", ""))
        )
    missing = Answer(Result.CRASHED, f"{scheme}_unanswered", "no answer for the entry")
    return [answers.get(str(index), missing) for index in range(len(entries))]


def _event_answers(results: list[dict[str, Any]], count: int) -> list[Answer]:
    """PutEvents' answers: one per entry, in order, an ``EventId`` or an ``ErrorCode``."""
    answers = []
    for result in results[:count]:
        if result.get("EventId"):
            answers.append(Answer(Result.SUCCEEDED, "eventbridge_ok", f"event {result['EventId']}"))
        else:
            code, message = str(result.get("ErrorCode", "")), str(result.get("ErrorMessage", ""))
            answers.append(_entry_failure("eventbridge", code, message))
    missing = Answer(Result.CRASHED, "eventbridge_unanswered", "no answer for the entry")
    return answers + [missing] * (count - len(answers))


def _client_error(scheme: str, name: str, region: str | None, exc: ClientError) -> Answer:
    """A request the service refused: throttled or failing (retry), or not found."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", ""))[:200]
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    what, missing = NOT_FOUND[scheme]
    if code in missing:
        where = f" in region {region}" if region else ""
        return Answer(Result.REJECTED, f"{scheme}_{what}_not_found", f"no {what} {name}{where}")
    if code in THROTTLED:
        return Answer(Result.CONNECTION_ERROR, f"{scheme}_throttled", f"{code}: {message}")
    if status >= 500:
        return Answer(Result.CONNECTION_ERROR, f"{scheme}_http_{status}", f"{code}: {message}")
    return Answer(Result.REJECTED, f"{scheme}_{error_name(code)}", message)


async def _close(client: AioBaseClient) -> None:
    await client.close()
