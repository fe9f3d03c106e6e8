"""`bridge.agent.sse.SseDecoder` against httpx-sse's decoder as an oracle, on any stream cut
anywhere; plus the spec points where httpx-sse is not the reference (BOM, `retry` digits)."""

from __future__ import annotations

from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.agent.sse import SseDecoder


def oracle(data: bytes) -> list[tuple[str, str]]:
    """httpx-sse's reading of a whole body: what its `aiter_sse` would yield, as (event, data).

    httpx-sse also dispatches events that carry no `data` line (data ""); the SSE spec says not
    to, and the agent client ignores empty data either way, so those are left out here."""
    text = data.decode("utf-8", "replace")
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    events = []
    for line in [*lines.decode(text), *lines.flush()]:
        sse = decoder.decode(line)
        if sse is not None and sse.data:
            events.append((sse.event, sse.data))
    return events


def ours(parts: list[bytes]) -> list[tuple[str, str]]:
    decoder = SseDecoder()
    return [(event, data) for part in parts for event, data in decoder.feed(part) if data]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


field_lines = st.one_of(
    st.builds(lambda v: "data:" + v, st.text(max_size=12)),
    st.builds(lambda v: "data: " + v, st.text(max_size=12)),
    st.builds(lambda v: "event: " + v, st.sampled_from(["delta", "done", "text", "", "x y"])),
    st.sampled_from(
        [
            "",
            "",
            "data",  # a field without a colon: data with an empty value
            "event",
            ": comment",
            ":",
            "id: 7",
            "id",
            "retry: 3000",
            "retry: x",
            "bogus: 1",
            "data:  two spaces",
            "DATA: case matters",
            " data: leading space is another field",
        ]
    ),
    st.text(max_size=15),
)
eols = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(field_lines, max_size=25))
    mixed = draw(st.booleans())
    eol = draw(eols)
    out = []
    for line in lines:
        # Lines may not contain line ends themselves; each ends with one (mixed or not).
        line = line.replace("\r", "").replace("\n", "")
        out.append(line + (draw(eols) if mixed else eol))
    tail = draw(st.sampled_from(["", "", "data: unterminated", "data: x\n"]))
    return ("".join(out) + tail).encode("utf-8", "surrogatepass")


@settings(max_examples=600, deadline=None)
@given(data=bodies(), cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=20))
def test_same_events_as_httpx_sse_for_any_partition(data, cuts):
    assert ours(split(data, cuts)) == oracle(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), cuts=st.lists(st.integers(min_value=1, max_value=120), max_size=10))
def test_arbitrary_bytes_match_the_oracle(data, cuts):
    # Invalid UTF-8 split across chunks still decodes as one replacement per bad sequence.
    if data.startswith(b"\xef\xbb\xbf"):
        data = b"x" + data  # a leading BOM is the one deliberate difference (next test)
    assert ours(split(data, cuts)) == oracle(data)


def test_bytewise_crlf_split_between_cr_and_lf():
    data = b"data: a\r\n\r\ndata: b\r\r\ndata: c\r\n\r\n"
    expected = [("message", "a"), ("message", "b"), ("message", "c")]
    assert ours([data[i : i + 1] for i in range(len(data))]) == expected == oracle(data)


def test_multiline_data_is_joined_with_lf_and_event_type_resets():
    data = b"event: delta\ndata: one\ndata:two\ndata\n\ndata: next\n\n"
    assert ours([data]) == [("delta", "one\ntwo\n"), ("message", "next")]


def test_leading_bom_is_skipped_once():
    bom = "\ufeff".encode()
    decoder = SseDecoder()
    parts = [bom[:1], bom[1:] + b"data: a\n", b"\n" + bom + b"data: b\n\n"]
    assert [e for p in parts for e in decoder.feed(p)] == [("message", "a")]  # 2nd BOM: unknown field


def test_an_event_cut_by_the_end_of_the_stream_is_not_dispatched():
    assert ours([b"data: complete\n\ndata: cut off\n"]) == [("message", "complete")]


def test_id_and_retry_are_remembered_per_the_spec():
    decoder = SseDecoder()
    decoder.feed(b"id: 42\nretry: 1500\ndata: x\n\nid: bad\0id\nretry: 1e3\nretry: -1\n\n")
    assert decoder.last_event_id == "42" and decoder.retry == 1500
