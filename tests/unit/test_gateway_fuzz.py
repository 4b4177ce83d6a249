"""Property-based fuzzing of the running gateway (fake backend): hostile messages and metadata
are answered with a status that is never INTERNAL or UNKNOWN, never hang, and leave it serving.

Requests travel as raw bytes through a generic stub, so strings that are not UTF-8 (lone
surrogates), unknown enum values and unknown or truncated fields reach the server as sent.
"""

from __future__ import annotations

import asyncio
import resource
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from benchmarks.fuzz import FORBIDDEN, HUNG, FuzzCase, bytes_field, request_bytes, text_bytes
from gateway.auth import hash_key
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from tests.fake_backend import FakeBackend

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MODELS = ("sentiment", "minilm")
KEY = "fuzz-key"
TIMEOUT = 5.0


@dataclass
class Running:
    target: str
    loop: asyncio.AbstractEventLoop
    server: GatewayServer


@pytest.fixture(scope="module")
def gateway() -> Iterator[Running]:
    """A gateway with API keys and tight limits, on its own event loop in a thread."""
    config = GatewayConfig.from_mapping(
        {
            "server": {"port": 0, "metrics_port": None, "max_receive_message_bytes": 1 << 20},
            "triton": {"health_poll_interval_s": 0.05, "request_timeout_s": TIMEOUT},
            "limits": {"max_inputs_per_request": 16, "max_chars_per_input": 2000},
            "models": [
                {"name": "sentiment", "task": "classify", "triton_model": "sentiment"},
                {"name": "minilm", "task": "embed", "triton_model": "minilm"},
            ],
            "auth": {
                "keys": [
                    {"name": "fuzz", "sha256": hash_key(KEY), "rate_per_s": 1000, "burst": 1000}
                ]
            },
        }
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = GatewayServer(config, FakeBackend())
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield Running(server.address, loop, server)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace=0, delay=0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture(scope="module")
def channel(gateway: Running) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        gateway.target, options=[("grpc.max_send_message_length", 8 << 20)]
    ) as ch:
        yield ch


def answer(channel: grpc.Channel, case: FuzzCase) -> str:
    try:
        if case.streaming:
            for _ in channel.unary_stream(case.method)(
                case.payload, metadata=case.metadata, timeout=TIMEOUT
            ):
                pass
        else:
            channel.unary_unary(case.method)(case.payload, metadata=case.metadata, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
        return HUNG if code == grpc.StatusCode.DEADLINE_EXCEEDED else code.name
    except (ValueError, TypeError):  # metadata the client library refuses to send at all
        return "CLIENT_REFUSED"
    return "OK"


# -- strategies ------------------------------------------------------------------------------
any_char = st.characters(exclude_categories=())  # control characters and lone surrogates too
texts = st.one_of(
    st.text(any_char, max_size=40),
    st.sampled_from(["", "\x00", "\ud800", "a\udfffb", "\u202e", "🙂" * 600, "x" * 2001]),
    st.integers(1, 6000).map(lambda n: "w " * n),
)
numbers = st.lists(
    st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, 2**63 - 1, 1 << 40])),
    max_size=3,
)
models = st.one_of(st.sampled_from(MODELS), st.text(any_char, max_size=30))
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
metadata = st.lists(
    st.one_of(
        st.tuples(st.just("authorization"), st.one_of(header_values, st.just(f"Bearer {KEY}"))),
        st.tuples(
            st.sampled_from(["x-lmforge-deployment", "x-lmforge-routing-key"]), header_values
        ),
        st.tuples(st.just("x-fuzz-bin"), st.binary(max_size=64)),
        st.tuples(st.text("abcdefghijklmnopqrstuvwxyz-_.", min_size=1, max_size=12), header_values),
    ),
    max_size=4,
).map(tuple)


@st.composite
def cases(draw: st.DrawFn) -> FuzzCase:
    rpc = draw(st.sampled_from(["Classify", "Embed", "Generate", "GenerateStream", "ListModels"]))
    if draw(st.integers(0, 9)) == 0:
        return FuzzCase(rpc, draw(st.binary(max_size=300)), draw(metadata), "random bytes")
    extra = draw(st.sampled_from([b"", b"\x12\xff", bytes_field(99, b"?"), bytes_field(3, b"")]))
    payload = request_bytes(
        rpc,
        text_bytes(draw(models)),
        [text_bytes(t) for t in draw(st.lists(texts, max_size=20))],
        draw(numbers),
        extra,
    )
    keyed = draw(st.booleans())
    meta = draw(metadata)
    if keyed:
        meta = (
            *[(k, v) for k, v in meta if k != "authorization"],
            ("authorization", f"Bearer {KEY}"),
        )
    return FuzzCase(rpc, payload, meta, "fields")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_fuzzed_requests_are_never_internal_and_never_hang(
    channel: grpc.Channel, case: FuzzCase
) -> None:
    code = answer(channel, case)
    assert code not in FORBIDDEN and code != HUNG, (code, case)


def test_after_fuzzing_the_gateway_still_serves_with_bounded_memory(
    gateway: Running, channel: grpc.Channel
) -> None:
    from lmforge_client._proto.lmforge.v1 import classify_pb2

    good = FuzzCase(
        "Classify",
        classify_pb2.ClassifyRequest(model="sentiment", inputs=["fine"]).SerializeToString(),
        (("authorization", f"Bearer {KEY}"),),
    )
    assert answer(channel, good) == "OK"
    before = rss_mib()
    hostile = FuzzCase(
        "Embed", request_bytes("Embed", b"minilm", [b"\xed\xa0\x80"] * 16), good.metadata
    )
    for _ in range(300):
        assert answer(channel, hostile) == "INVALID_ARGUMENT"
        assert answer(channel, good) == "OK"
    assert rss_mib() - before < 64, (before, rss_mib())
    assert gateway.server.admission.in_flight == 0  # nothing left counted in flight
