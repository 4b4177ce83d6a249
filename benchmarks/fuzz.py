"""Hostile requests for a running gateway: what a fuzz run sends and how it judges the answers.

Each :class:`FuzzCase` is a method, the raw bytes of a request message and its metadata, so it
can carry what the typed stubs refuse to send: strings that are not UTF-8 (lone surrogates,
cut sequences), unknown enum values, unknown fields, truncated or random bytes. Cases are sent
through a generic stub (bytes in, bytes out). A gateway passes when every call is answered,
with any status but ``INTERNAL`` or ``UNKNOWN``, within its deadline.

:func:`random_case` draws cases from a seeded ``random.Random`` (the ``lmforge bench chaos``
fuzz phase); the property-based tests build the same kinds of case with hypothesis.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

SERVICE = "/lmforge.v1.InferenceService/"
UNARY = ("Classify", "Embed", "Generate", "ListModels")
STREAMING = ("GenerateStream",)
#: answers a fuzzed request must never get
FORBIDDEN = frozenset({"INTERNAL", "UNKNOWN"})
HUNG = "HUNG"

Metadata = tuple[tuple[str, str | bytes], ...]


# -- protobuf wire format, by hand (so invalid values can be written) -----------------------
def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 are sent as 10-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def bytes_field(number: int, raw: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(raw)) + raw


def varint_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def fixed32_field(number: int, value: float) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<f", value)


def text_bytes(text: str) -> bytes:
    """UTF-8, except that lone surrogates are written as such (invalid UTF-8 on purpose)."""
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class FuzzCase:
    rpc: str
    payload: bytes
    metadata: Metadata = ()
    note: str = ""

    @property
    def method(self) -> str:
        return SERVICE + self.rpc

    @property
    def streaming(self) -> bool:
        return self.rpc in STREAMING


# Field numbers of lmforge.v1 requests: model=1, inputs=2 (Classify, Embed); Classify:
# truncation=3, top_k=4, pairs=5; Embed: truncation=3, normalize=4, dimensions=5;
# Generate(Stream): model=1, prompt=2, max_new_tokens=3, temperature=4 (float).
def request_bytes(
    rpc: str,
    model: bytes,
    texts: Sequence[bytes],
    numbers: Sequence[int] = (),
    extra: bytes = b"",
) -> bytes:
    """A request of ``rpc`` with raw string fields and raw varints for its number fields."""
    if rpc == "ListModels":
        return extra
    body = bytes_field(1, model)
    if rpc in ("Generate", "GenerateStream"):
        body += bytes_field(2, texts[0] if texts else b"")
        for number, value in zip((3,), numbers, strict=False):
            body += varint_field(number, value)
        return body + extra
    body += b"".join(bytes_field(2, t) for t in texts)
    for number, value in zip((3, 4, 5), numbers, strict=False):
        body += varint_field(number, value)
    return body + extra


# -- random cases ------------------------------------------------------------------------
_ODD_TEXTS = (
    "",
    "\x00",
    "\ud800",  # a lone high surrogate: not UTF-8
    "a\udfffb",
    "\u202e\u200b\ufeff",
    "\r\n\t\x1b[31m",
    "🙂" * 50,
    "ﷺ" * 100,
    "word " * 3000,
)
_ODD_INTS = (0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, 7, 99, 1 << 40)


def _random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(_ODD_TEXTS)
    if kind < 0.4:
        return "x" * rng.choice((1, 100, 8192, 8193, 20_000, 200_000))
    length = rng.randint(0, 40)
    return "".join(
        chr(rng.choice((rng.randint(0, 0x7F), rng.randint(0, 0x10FFFF)))) for _ in range(length)
    )


def _random_metadata(rng: random.Random, models: Sequence[str]) -> Metadata:
    choices: list[tuple[str, str | bytes]] = [
        ("authorization", rng.choice(("Bearer", "Bearer x", "Basic abc", "bearer  ", ""))),
        ("x-lmforge-deployment", rng.choice(("", "nope", "a" * 300, *models))),
        ("x-lmforge-routing-key", "".join(chr(rng.randint(0x20, 0x7E)) for _ in range(20))),
        ("x-junk-bin", bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))),
        ("x-long", "v" * rng.choice((1, 1000, 7000))),
    ]
    return tuple(rng.sample(choices, rng.randint(0, len(choices))))


def random_case(rng: random.Random, models: Sequence[str]) -> FuzzCase:
    """One hostile request; ``models`` are real model names (so some cases reach a model)."""
    rpc = rng.choice((*UNARY, *STREAMING))
    roll = rng.random()
    metadata = _random_metadata(rng, models) if rng.random() < 0.3 else ()
    if roll < 0.1:  # random bytes
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
        return FuzzCase(rpc, payload, metadata, "random bytes")
    model = rng.choice((*models, "", "no-such-model", "\ud800", "m" * 1000))
    texts = [_random_text(rng) for _ in range(rng.choice((0, 1, 2, 5, 64, 65, 300)))]
    numbers = [rng.choice(_ODD_INTS) for _ in range(rng.randint(0, 3))]
    extra = b""
    if roll < 0.2:  # an unknown field, or a message cut short
        extra = bytes_field(rng.randint(20, 500), b"?") if roll < 0.15 else b"\x12\xff"
    payload = request_bytes(rpc, text_bytes(model), [text_bytes(t) for t in texts], numbers, extra)
    return FuzzCase(rpc, payload, metadata, "fields")


# -- sending -----------------------------------------------------------------------------
async def send(channel: grpc.aio.Channel, case: FuzzCase, timeout: float) -> str:
    """The status name the gateway answered ``case`` with; ``HUNG`` past ``timeout``."""
    try:
        async with asyncio.timeout(timeout + 2.0):
            if case.streaming:
                stream = channel.unary_stream(case.method)(
                    case.payload, metadata=case.metadata, timeout=timeout
                )
                async for _ in stream:
                    pass
            else:
                await channel.unary_unary(case.method)(
                    case.payload, metadata=case.metadata, timeout=timeout
                )
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        return HUNG if code == grpc.StatusCode.DEADLINE_EXCEEDED else code.name
    except TimeoutError:
        return HUNG
    except (ValueError, TypeError):  # metadata the client library itself refuses to send
        return "CLIENT_REFUSED"
    return "OK"


@dataclass
class FuzzReport:
    sent: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (code, case note + rpc)
    seconds: float = 0.0

    @property
    def internal(self) -> int:
        return sum(self.codes[c] for c in FORBIDDEN)

    @property
    def hung(self) -> int:
        return self.codes[HUNG]


async def fuzz(
    target: str,
    count: int,
    models: Sequence[str],
    *,
    seed: int = 0,
    concurrency: int = 16,
    timeout: float = 10.0,
    credentials: grpc.ChannelCredentials | None = None,
    api_key: str | None = None,
) -> FuzzReport:
    """Send ``count`` random cases to ``target``, ``concurrency`` at a time; with ``api_key``,
    the cases that carry no ``authorization`` of their own carry that key (so they get past
    authentication and reach the handlers)."""
    rng = random.Random(seed)
    report = FuzzReport()
    cases = iter(range(count))
    started = time.monotonic()
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    channel = (
        grpc.aio.insecure_channel(target, options=options)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials, options=options)
    )

    async def worker() -> None:
        for _ in cases:
            case = random_case(rng, models)
            if api_key is not None and all(k != "authorization" for k, _ in case.metadata):
                auth = ("authorization", f"Bearer {api_key}")
                case = FuzzCase(case.rpc, case.payload, (*case.metadata, auth), case.note)
            code = await send(channel, case, timeout)
            report.sent += 1
            report.codes[code] += 1
            if code in FORBIDDEN or code == HUNG:
                report.failures.append((code, f"{case.rpc} {case.note}: {case.payload[:80]!r}"))

    async with channel:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    report.seconds = time.monotonic() - started
    return report
