"""Destination URLs: each scheme's form, read and checked in one place.

The subscriptions store checks a URL with ``validate`` before storing it; each broker
sink reads it with its ``parse_*`` function. Nothing here imports a client library, so
the API accepts a broker URL whether or not this process has that broker's extra.

- ``amqp(s)://user:pass@host:port/vhost?exchange=NAME&routing_key=TEMPLATE``
- ``kafka://host:port[,host:port]/TOPIC``
- ``nats://[user:pass@ or token@]host:port[,host:port]/SUBJECT``
- ``sqs://QUEUE_NAME``, ``sns://TOPIC_ARN``, ``eventbridge://BUS_NAME?source=S``, each
  with an optional ``?region=R`` (credentials come from the standard AWS environment)

Names may hold the placeholders ``{type}`` and ``{topic}``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from notifier.observability.redaction import MASK, redact_url
from notifier.sinks.message import unknown_placeholders

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "kafka": 9092, "nats": 4222}
# A Kafka topic: letters, digits, '.', '_' and '-', at most 249 characters.
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")
# AWS names, as the services accept them.
_SQS_QUEUE = re.compile(r"[A-Za-z0-9_-]{1,75}(?:\.fifo)?|[A-Za-z0-9_-]{76,80}")
_SNS_TOPIC_ARN = re.compile(
    r"arn:aws[a-z-]*:sns:([a-z0-9-]+):[0-9]{12}:[A-Za-z0-9_-]{1,251}(?:\.fifo)?"
)
_EVENT_BUS = re.compile(r"[A-Za-z0-9._/-]{1,256}")
_EVENT_BUS_ARN = re.compile(
    r"arn:aws[a-z-]*:events:([a-z0-9-]+):[0-9]{12}:event-bus/[A-Za-z0-9._/-]{1,256}"
)
_AWS_REGION = re.compile(r"[a-z]{2}(?:-[a-z0-9]+)+")


# A sink reads its subscription's URL on every attempt: each form is parsed once (a
# refused URL is not kept, and is refused again).
_cached = functools.lru_cache(maxsize=4096)


class InvalidTarget(ValueError):
    """A destination URL that no sink can use; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AmqpTarget:
    connection_url: str  # scheme, credentials, host, port and vhost: one connection each
    exchange: str  # "" is the default exchange, which routes by queue name
    routing_key: str  # a template


@dataclass(frozen=True, slots=True)
class KafkaTarget:
    servers: tuple[Server, ...]  # the bootstrap servers: one producer each set
    topic: str  # a template


@dataclass(frozen=True, slots=True)
class NatsTarget:
    servers: tuple[Server, ...]
    user: str | None
    password: str | None
    token: str | None
    subject: str  # a template

    @property
    def connection_key(self) -> tuple[object, ...]:
        return (self.servers, self.user, self.password, self.token)


@dataclass(frozen=True, slots=True)
class AwsTarget:
    service: str  # botocore's name of the service: "sqs", "sns" or "events"
    name: str  # the queue's name, the topic's ARN, or the event bus's name or ARN
    region: str | None  # None: the standard AWS environment's
    source: str | None = None  # EventBridge's Source; None: the events' CloudEvents source

    @property
    def fifo(self) -> bool:
        return self.service != "events" and self.name.endswith(".fifo")


def check_text(url: str) -> None:
    """Refuse what no URL of any kind may hold: whitespace, control characters, excess length."""
    # urlsplit silently drops tabs and newlines, so they are refused before it runs.
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise InvalidTarget("must not contain whitespace or control characters")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidTarget(f"must be at most {MAX_URL_LENGTH} characters")


def _authority(url: str) -> tuple[str, str, str]:
    """Scheme, user information and host list of ``url``, split by hand: a Kafka or NATS
    URL may name several servers, which ``urlsplit`` cannot read as one port."""
    scheme, _, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo, at, hosts = authority.rpartition("@")
    return scheme.lower(), userinfo if at else "", hosts


def _servers(hosts: str, scheme: str) -> tuple[Server, ...]:
    servers = []
    for part in hosts.split(","):
        host, colon, port = part.rpartition(":") if not part.endswith("]") else (part, "", "")
        if not colon:
            host, port = part, ""
        if not host or not _HOST.fullmatch(host):
            raise InvalidTarget(f"{part!r} is not host or host:port")
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise InvalidTarget(f"{part!r} has no valid port (1 to 65535)")
        servers.append(Server(host.strip("[]"), int(port) if port else DEFAULT_PORTS[scheme]))
    return tuple(servers)


def _template(name: str, what: str) -> str:
    if unknown := unknown_placeholders(name):
        raise InvalidTarget(f"{what} may use {{type}} and {{topic}}, not {', '.join(unknown)}")
    return name


@_cached
def parse_amqp(url: str) -> AmqpTarget:
    check_text(url)
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise InvalidTarget("is not a valid URL: a port must be a number") from None
    if not parts.hostname:
        raise InvalidTarget("must name a host (amqp://user:pass@host:5672/vhost)")
    if parts.fragment:
        raise InvalidTarget("must not have a #fragment")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidTarget("its query must be name=value parameters joined by &") from None
    params = dict(query)
    unknown = sorted(set(params) - {"exchange", "routing_key"})
    if unknown or len(params) != len(query):
        named = ", ".join(unknown) or "a repeated one"
        raise InvalidTarget(f"takes the parameters exchange and routing_key, not {named}")
    exchange = params.get("exchange", "")
    routing_key = params.get("routing_key", "" if exchange == "" else "{type}")
    if exchange == "" and routing_key == "":
        raise InvalidTarget(
            "names no exchange, and the default exchange routes by queue name: "
            "give ?exchange=NAME or ?routing_key=QUEUE"
        )
    if len(routing_key.encode()) > 255 or len(exchange.encode()) > 255:
        raise InvalidTarget("exchange and routing_key must be at most 255 bytes")
    connection = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
    return AmqpTarget(connection, exchange, _template(routing_key, "routing_key"))


@_cached
def parse_kafka(url: str) -> KafkaTarget:
    check_text(url)
    scheme, userinfo, hosts = _authority(url)
    if userinfo:
        raise InvalidTarget("kafka:// URLs take no credentials (SASL is not supported yet)")
    rest = url.split("://", 1)[1][len(hosts) :]
    if "?" in rest or "#" in rest:
        raise InvalidTarget("kafka:// URLs take no ?query or #fragment")
    topic = rest.removeprefix("/")
    if not topic:
        raise InvalidTarget("must name a topic (kafka://host:9092/TOPIC)")
    bare = topic.replace("{type}", "x").replace("{topic}", "x")
    _template(topic, "the topic")
    if not _KAFKA_TOPIC.fullmatch(bare):
        raise InvalidTarget(
            "the topic may hold letters, digits, '.', '_' and '-' (at most 249), "
            "and the placeholders {type} and {topic}"
        )
    return KafkaTarget(_servers(hosts, scheme), topic)


@_cached
def parse_nats(url: str) -> NatsTarget:
    check_text(url)
    scheme, userinfo, hosts = _authority(url)
    rest = url.split("://", 1)[1][len(userinfo) + (1 if userinfo else 0) + len(hosts) :]
    if "?" in rest or "#" in rest:
        raise InvalidTarget("nats:// URLs take no ?query or #fragment")
    subject = rest.removeprefix("/")
    if not subject:
        raise InvalidTarget("must name a subject (nats://host:4222/SUBJECT)")
    _template(subject, "the subject")
    tokens = subject.replace("{type}", "x").replace("{topic}", "x").split(".")
    if any(not token or "*" in token or ">" in token for token in tokens):
        raise InvalidTarget("the subject must be tokens joined by '.', without wildcards * and >")
    user = password = token = None
    if userinfo:
        name, colon, secret = userinfo.partition(":")
        if colon:
            user, password = unquote(name), unquote(secret)
        else:
            token = unquote(name)
    return NatsTarget(_servers(hosts, scheme), user, password, token, subject)


def _aws_parts(url: str, parameters: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The name an AWS URL gives (what follows ``scheme://``) and its query parameters."""
    check_text(url)
    name, _, query = url.split("://", 1)[1].partition("?")
    if "#" in url:
        raise InvalidTarget("must not have a #fragment")
    if "@" in name:
        raise InvalidTarget("takes no credentials: they come from the standard AWS environment")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidTarget("its query must be name=value parameters joined by &") from None
    params = dict(pairs)
    unknown = sorted(set(params) - set(parameters))
    if unknown or len(params) != len(pairs):
        named = ", ".join(unknown) or "a repeated one"
        raise InvalidTarget(f"takes the parameters {' and '.join(parameters)}, not {named}")
    region = params.get("region")
    if region is not None and not _AWS_REGION.fullmatch(region):
        raise InvalidTarget(f"region {region!r} is not an AWS region name (us-east-1)")
    return name, params


def _arn_region(arn_region: str, params: dict[str, str]) -> str:
    region = params.get("region", arn_region)
    if region != arn_region:
        raise InvalidTarget(f"region {region} is not the one its ARN names ({arn_region})")
    return region


@_cached
def parse_sqs(url: str) -> AwsTarget:
    name, params = _aws_parts(url, ("region",))
    if not _SQS_QUEUE.fullmatch(name):
        raise InvalidTarget(
            "must name a queue (sqs://QUEUE_NAME): at most 80 letters, digits, '-' and '_', "
            "a FIFO queue's ending with .fifo"
        )
    return AwsTarget("sqs", name, params.get("region"))


@_cached
def parse_sns(url: str) -> AwsTarget:
    arn, params = _aws_parts(url, ("region",))
    match = _SNS_TOPIC_ARN.fullmatch(arn)
    if not match:
        raise InvalidTarget("must name a topic by its ARN (sns://arn:aws:sns:REGION:ACCOUNT:TOPIC)")
    return AwsTarget("sns", arn, _arn_region(match.group(1), params))


@_cached
def parse_eventbridge(url: str) -> AwsTarget:
    bus, params = _aws_parts(url, ("source", "region"))
    region = params.get("region")
    if match := _EVENT_BUS_ARN.fullmatch(bus):
        region = _arn_region(match.group(1), params)
    elif not _EVENT_BUS.fullmatch(bus):
        raise InvalidTarget(
            "must name an event bus (eventbridge://BUS_NAME, or its ARN): at most 256 "
            "letters, digits, '.', '-', '_' and '/'"
        )
    source = params.get("source")
    if source is not None and not 0 < len(source) <= 256:
        raise InvalidTarget("source must be 1 to 256 characters")
    if source is not None and source.startswith("aws."):
        raise InvalidTarget("source must not start with aws. (AWS keeps it for its services)")
    return AwsTarget("events", bus, region, source)


Target = AmqpTarget | KafkaTarget | NatsTarget | AwsTarget
_PARSERS: dict[str, Callable[[str], Target]] = {
    "amqp": parse_amqp,
    "amqps": parse_amqp,
    "kafka": parse_kafka,
    "nats": parse_nats,
    "sqs": parse_sqs,
    "sns": parse_sns,
    "eventbridge": parse_eventbridge,
}


def parse(url: str) -> Target:
    """A broker or AWS URL (any scheme but http(s)), read; ``InvalidTarget`` says why not."""
    return _PARSERS[url.partition("://")[0].lower()](url)


def validate(url: str) -> str:
    """Check a broker or AWS URL; ``InvalidTarget`` says why not."""
    parse(url)
    return url


def masked(url: str) -> str:
    """``url`` as it may be shown: a password, and a NATS token, replaced by ``***``."""
    shown = redact_url(url)
    scheme, userinfo, _hosts = _authority(shown)
    if scheme == "nats" and userinfo and ":" not in userinfo and userinfo != MASK:
        shown = shown.replace(f"://{userinfo}@", f"://{MASK}@", 1)
    return shown
