"""The sans-I/O frame codec, driven without any I/O (docs/protocol.md, "Framing")."""

import json
import random
import struct

import pytest

from bulkhead import _protocol as P
from bulkhead._protocol import Frame, FrameDecoder, ProtocolError, encode_frame


def header(magic=b"BK", version=1, frame_type=P.JOB, length=0, job_id=0):
    return struct.pack("<2sBBIQ", magic, version, frame_type, length, job_id)


def decode_all(data, **kwargs):
    decoder = FrameDecoder(**kwargs)
    decoder.feed(data)
    return list(decoder)


# -- encoding ------------------------------------------------------------------------------


def test_header_layout_is_little_endian_16_bytes():
    data = encode_frame(P.RESULT_BYTES, 0x0102030405060708, b"abc")
    assert len(data) == 16 + 3
    assert data[:2] == b"BK"
    assert data[2] == 1
    assert data[3] == 0x10
    assert data[4:8] == b"\x03\x00\x00\x00"
    assert data[8:16] == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert data[16:] == b"abc"


def test_type_constants_match_the_protocol_table():
    assert (P.HELLO, P.READY, P.START_FAILED) == (0x01, 0x02, 0x03)
    assert (P.RESULT_BYTES, P.RESULT_JSON, P.RESULT_TEXT, P.HANDLER_ERROR) == (
        0x10, 0x11, 0x12, 0x13)
    assert P.HEARTBEAT == 0x20
    assert (P.JOB, P.SHUTDOWN) == (0x80, 0x81)
    assert P.WORKER_TO_SUPERVISOR & P.SUPERVISOR_TO_WORKER == frozenset()


@pytest.mark.parametrize("body", [b"", b"x", bytearray(b"ab"), memoryview(b"abcd"),
                                  memoryview(bytearray(range(12))).cast("I")])
def test_encode_accepts_bytes_like_bodies(body):
    data = encode_frame(P.JOB, 5, body)
    assert data[16:] == bytes(body)
    assert struct.unpack_from("<I", data, 4)[0] == len(bytes(body))


@pytest.mark.parametrize("frame_type", [0x00, 0x04, 0x14, 0x32, 0x7F, 0x83, 0xFF, 256, -1])
def test_encode_refuses_unknown_types(frame_type):
    with pytest.raises(ValueError):
        encode_frame(frame_type, 0, b"")


@pytest.mark.parametrize("job_id", [-1, 1 << 64])
def test_encode_refuses_job_ids_outside_u64(job_id):
    with pytest.raises(ValueError):
        encode_frame(P.JOB, job_id, b"")


def test_encode_header_refuses_lengths_outside_u32():
    with pytest.raises(ValueError):
        P.encode_header(P.JOB, 1, 1 << 32)
    assert len(P.encode_header(P.JOB, 1, (1 << 32) - 1)) == 16


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("frame_type", sorted(P.ALL_TYPES))
def test_round_trip_every_type(frame_type):
    body = b"" if frame_type == P.SHUTDOWN else b'{"k":1}'
    frames = decode_all(encode_frame(frame_type, 77, body))
    assert frames == [Frame(frame_type, 77, body)]


def test_round_trip_max_job_id_and_sizes():
    frames = [Frame(P.JOB, (1 << 64) - 1, b""), Frame(P.JOB, 1, b"a"),
              Frame(P.JOB, 2, bytes(range(256)) * 1000), Frame(P.SHUTDOWN, 0, b"")]
    data = b"".join(encode_frame(f.type, f.job_id, f.body) for f in frames)
    assert decode_all(data) == frames


def test_byte_by_byte_feeding_yields_the_same_frames():
    frames = [Frame(P.HELLO, 0, b'{"protocol":1}'), Frame(P.RESULT_BYTES, 3, b"\x00" * 100),
              Frame(P.RESULT_TEXT, 3, b""), Frame(P.HEARTBEAT, 4, b'{"progress":1}'),
              Frame(P.RESULT_BYTES, 9, bytes(range(256)) * 300)]   # large body path too
    data = b"".join(encode_frame(f.type, f.job_id, f.body) for f in frames)
    decoder = FrameDecoder(P.WORKER_TO_SUPERVISOR)
    got = []
    for i in range(len(data)):
        decoder.feed(data[i:i + 1])
        frame = decoder.next()
        if frame is not None:
            got.append(frame)
            assert decoder.next() is None
    assert got == frames
    assert decoder.buffered == 0


@pytest.mark.parametrize("seed", range(20))
def test_random_split_points(seed):
    rng = random.Random(seed)
    types = sorted(P.WORKER_TO_SUPERVISOR)
    frames = [Frame(rng.choice(types), rng.randrange(1 << 64),
                    bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 15, 16, 300]))))
              for _ in range(30)]
    frames.append(Frame(P.RESULT_BYTES, 1, b"z" * rng.randrange(70000, 300000)))
    data = b"".join(encode_frame(f.type, f.job_id, f.body) for f in frames)
    decoder = FrameDecoder(P.WORKER_TO_SUPERVISOR)
    got, pos = [], 0
    while pos < len(data):
        step = rng.choice([1, 2, 7, 16, 17, 1000, 65536])
        decoder.feed(data[pos:pos + step])
        pos += step
        got.extend(decoder)
    assert got == frames


def test_get_buffer_receives_a_large_body_in_place():
    body = bytes(range(256)) * 4096   # 1 MiB
    data = encode_frame(P.JOB, 12, body) + encode_frame(P.SHUTDOWN, 0)
    decoder = FrameDecoder(P.SUPERVISOR_TO_WORKER)
    got, pos, body_views = [], 0, 0
    while pos < len(data):
        buf = decoder.get_buffer()
        n = min(len(buf), 100000, len(data) - pos)
        buf[:n] = data[pos:pos + n]
        pos += n
        if len(buf) != 256 * 1024:
            body_views += 1
            assert len(buf) <= len(body)   # never past the body's end
        decoder.buffer_updated(n)
        got.extend(decoder)
    assert got == [Frame(P.JOB, 12, body), Frame(P.SHUTDOWN, 0, b"")]
    assert body_views > 0


def test_buffer_updated_without_get_buffer_is_our_bug():
    with pytest.raises(RuntimeError):
        FrameDecoder().buffer_updated(1)


def test_frame_repr_is_short():
    text = repr(Frame(P.JOB, 3, b"x" * 1000))
    assert "JOB" in text and "1000 bytes" in text and len(text) < 200


# -- malformed headers ---------------------------------------------------------------------


def expect_error(data, match, **kwargs):
    decoder = FrameDecoder(**kwargs)
    decoder.feed(data)
    with pytest.raises(ProtocolError, match=match):
        decoder.next()
    return decoder


def test_bad_magic():
    expect_error(header(magic=b"KB"), "magic")


def test_bad_version():
    expect_error(header(version=2), "version")
    expect_error(header(version=0), "version")


def test_magic_is_checked_before_version_and_version_before_type():
    expect_error(header(magic=b"XX", version=9, frame_type=0x55), "magic")
    expect_error(header(version=9, frame_type=0x55), "version")


@pytest.mark.parametrize("frame_type", [0x00, 0x04, 0x0F, 0x14, 0x21, 0x32, 0x7F, 0x83, 0xFF])
def test_unknown_type(frame_type):
    expect_error(header(frame_type=frame_type), "type")


def test_type_of_the_other_direction_is_refused():
    expect_error(header(frame_type=P.JOB), "JOB", accept=P.WORKER_TO_SUPERVISOR)
    expect_error(header(frame_type=P.RESULT_BYTES), "RESULT_BYTES",
                 accept=P.SUPERVISOR_TO_WORKER)


def test_oversize_control_frame_is_refused_before_its_body_arrives():
    decoder = expect_error(header(frame_type=P.HEARTBEAT, length=P.MAX_CONTROL_BODY + 1),
                           "exceeds", accept=P.WORKER_TO_SUPERVISOR)
    assert decoder.buffered == 0


def test_control_limit_is_inclusive():
    decoder = FrameDecoder(P.WORKER_TO_SUPERVISOR)
    decoder.feed(header(frame_type=P.HELLO, length=P.MAX_CONTROL_BODY))
    assert decoder.next() is None   # accepted, waiting for the body


@pytest.mark.parametrize("frame_type", [P.HELLO, P.READY, P.START_FAILED, P.HANDLER_ERROR,
                                        P.HEARTBEAT])
def test_json_frames_use_the_control_limit(frame_type):
    expect_error(header(frame_type=frame_type, length=(1 << 20) + 1), "exceeds")


@pytest.mark.parametrize("frame_type", [P.RESULT_BYTES, P.RESULT_JSON, P.RESULT_TEXT, P.JOB])
def test_payload_frames_use_max_payload(frame_type):
    decoder = FrameDecoder(max_payload=1000)
    decoder.feed(header(frame_type=frame_type, length=1000))
    assert decoder.next() is None
    expect_error(header(frame_type=frame_type, length=1001), "exceeds", max_payload=1000)
    # the default max_payload is 64 MiB
    expect_error(header(frame_type=frame_type, length=(64 << 20) + 1), "exceeds")


def test_shutdown_uses_the_control_limit():
    assert decode_all(header(frame_type=P.SHUTDOWN, length=2) + b"{}") == [
        Frame(P.SHUTDOWN, 0, b"{}")]
    expect_error(header(frame_type=P.SHUTDOWN, length=(1 << 20) + 1), "exceeds")


@pytest.mark.parametrize("prefix", [b"X", b"BX", b"\x00"])
def test_bad_magic_is_refused_before_a_whole_header(prefix):
    expect_error(prefix, "magic")


def test_a_good_partial_header_waits():
    decoder = FrameDecoder()
    decoder.feed(b"BK\x01")
    assert decoder.next() is None


def test_huge_length_never_allocates():
    decoder = expect_error(header(frame_type=P.JOB, length=0xFFFFFFFF), "exceeds")
    assert decoder.buffered == 0


def test_errors_latch():
    decoder = expect_error(header(magic=b"no") + encode_frame(P.JOB, 1, b"ok"), "magic")
    first = decoder.error
    for call in (decoder.next, lambda: decoder.feed(b"more"), decoder.feed_eof,
                 decoder.get_buffer):
        with pytest.raises(ProtocolError) as info:
            call()
        assert info.value is first


def test_valid_frames_before_a_bad_one_are_delivered():
    decoder = FrameDecoder()
    decoder.feed(encode_frame(P.JOB, 1, b"a") + header(version=3))
    assert decoder.next() == Frame(P.JOB, 1, b"a")
    with pytest.raises(ProtocolError):
        decoder.next()


# -- end of stream -------------------------------------------------------------------------


def test_clean_eof_between_frames():
    decoder = FrameDecoder()
    decoder.feed(encode_frame(P.JOB, 1, b"a"))
    decoder.feed_eof()
    assert decoder.eof
    assert decoder.next() == Frame(P.JOB, 1, b"a")
    assert decoder.next() is None
    assert decoder.error is None


@pytest.mark.parametrize("cut", [1, 8, 15, 16, 17, 19])
def test_eof_in_the_middle_of_a_frame_is_the_peers_error(cut):
    decoder = FrameDecoder()
    decoder.feed(encode_frame(P.JOB, 1, b"abcd")[:cut])
    decoder.feed_eof()
    with pytest.raises(ProtocolError, match="EOF"):
        decoder.next()


def test_eof_in_the_middle_of_a_large_body():
    decoder = FrameDecoder()
    decoder.feed(encode_frame(P.JOB, 1, b"x" * 200000)[:100000])
    assert decoder.next() is None
    decoder.feed_eof()
    with pytest.raises(ProtocolError, match="EOF"):
        decoder.next()


def test_feeding_after_eof_is_our_bug():
    decoder = FrameDecoder()
    decoder.feed_eof()
    with pytest.raises(RuntimeError):
        decoder.feed(b"x")


# -- fuzz ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(50))
def test_fuzz_only_frames_or_protocol_errors(seed):
    """Random and mutated streams: the decoder yields frames or raises ProtocolError, nothing
    else, and never returns a body longer than its limit."""
    rng = random.Random(seed)
    valid = b"".join(encode_frame(t, rng.randrange(1 << 64), json.dumps({"i": i}).encode())
                     for i, t in enumerate(sorted(P.WORKER_TO_SUPERVISOR)))
    data = bytearray(valid)
    for _ in range(rng.randrange(1, 6)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.3:
        data = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    decoder = FrameDecoder(P.WORKER_TO_SUPERVISOR, max_payload=4096)
    pos = 0
    try:
        while pos < len(data):
            step = rng.randrange(1, 40)
            decoder.feed(bytes(data[pos:pos + step]))
            pos += step
            for frame in decoder:
                assert frame.type in P.WORKER_TO_SUPERVISOR
                assert len(frame.body) <= 4096
        decoder.feed_eof()
        list(decoder)
    except ProtocolError:
        assert decoder.error is not None
