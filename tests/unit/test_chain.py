"""The append-only chain: linkage, the head cache, concurrent writers, torn tails, repair, hostile bytes."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from asl_capture import chain, cose, dcbor
from asl_capture.chain import Head, Item
from asl_capture.errors import AslError, ChainError, TornTailError, TruncatedCbor, VerificationError
from asl_capture.format import StepRecord
from asl_capture.keys import Signer, generate, load_public, load_signer
from asl_capture.store import ProvenanceDir
from tests.conftest import KeyPair
from tests.unit.bodies import builder, full_record

TAGS = frozenset({cose.COSE_SIGN1_TAG})


class Ids:
    """A ``new_chain_id`` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return bytes([self.calls]) * 16


def append_n(prov: ProvenanceDir, signer: Signer, n: int, ids: Ids | None = None) -> list[tuple[StepRecord, Item]]:
    ids = ids if ids is not None else Ids()
    return [chain.append(prov, signer, builder(f"s{i}", run=i), new_chain_id=ids) for i in range(n)]


def payload_of(raw: bytes) -> StepRecord:
    msg = cose.parse(dcbor.decode(raw, tags=TAGS))
    return StepRecord.from_cbor(msg.payload)


@pytest.fixture
def prov(tmp_path: Path) -> ProvenanceDir:
    return ProvenanceDir.create(tmp_path / "prov")


@pytest.fixture
def signer(keypair: KeyPair) -> Signer:
    return load_signer(keypair.key)


def test_append_three_records(prov: ProvenanceDir, signer: Signer, keypair: KeyPair) -> None:
    ids = Ids()
    seen: list[Head] = []
    results = [chain.append(prov, signer, builder(f"s{i}", run=i, seen=seen), new_chain_id=ids) for i in range(3)]
    assert ids.calls == 1  # a chain id is made once, for the first record
    records = [r for r, _ in results]
    items = [i for _, i in results]
    assert [r.seq for r in records] == [0, 1, 2]
    assert {r.chain for r in records} == {b"\x01" * 16}
    assert records[0].prev is None
    assert records[1].prev == hashlib.sha256(items[0].raw).digest()
    assert records[2].prev == hashlib.sha256(items[1].raw).digest()
    assert [r.step for r in records] == ["s0", "s1", "s2"]
    assert [h.next_seq for h in seen] == [0, 1, 2]
    assert seen[0] == Head(chain=None, next_seq=0, prev=None, end=0)
    assert seen[2].prev == items[1].digest and seen[2].end == items[2].offset

    data = prov.chain.read_bytes()
    assert data == b"".join(i.raw for i in items)
    assert [i.offset for i in items] == [0, len(items[0].raw), len(items[0].raw) + len(items[1].raw)]
    scan = chain.read(prov.chain)
    assert scan.items == tuple(items) and scan.torn is None and scan.size == len(data)
    public = load_public(keypair.pub)
    for record, item in results:
        msg = cose.parse(dcbor.decode(item.raw, tags=TAGS))
        assert msg.kid == keypair.kid
        assert cose.verify(msg, public) == record.to_cbor()
        assert StepRecord.from_cbor(msg.payload) == record


def test_build_cannot_override_chain_fields(prov: ProvenanceDir, signer: Signer) -> None:
    build = builder(chain=b"X" * 16, seq=99, prev=b"P" * 32)
    record, _ = chain.append(prov, signer, build, new_chain_id=Ids())
    assert (record.chain, record.seq, record.prev) == (b"\x01" * 16, 0, None)


def test_invalid_body_writes_nothing(prov: ProvenanceDir, signer: Signer) -> None:
    append_n(prov, signer, 1)
    before = prov.chain.read_bytes()

    with pytest.raises(AslError):
        chain.append(prov, signer, builder(argv=("ok", 1)), new_chain_id=Ids())
    assert prov.chain.read_bytes() == before


def test_head_cache_written(prov: ProvenanceDir, signer: Signer) -> None:
    (_, first), (_, second) = append_n(prov, signer, 2)
    head = dcbor.decode(prov.head.read_bytes())
    assert head == {"start": second.offset, "end": second.offset + len(second.raw), "digest": second.digest}
    assert chain.check_appendable(prov) == Head(chain=b"\x01" * 16, next_seq=2, prev=second.digest,
                                                end=len(first.raw) + len(second.raw))


@pytest.mark.parametrize("damage", [
    "delete", "garbage", "empty", "wrong digest", "wrong types", "points at first item", "end beyond file",
    "start after end",
])
def test_head_cache_damaged_appends_still_link(prov: ProvenanceDir, signer: Signer, damage: str) -> None:
    (_, first), (_, second) = append_n(prov, signer, 2)
    end = second.offset + len(second.raw)
    if damage == "delete":
        prov.head.unlink()
    else:
        damaged: dict[str, dcbor.Value] = {
            "garbage": None,
            "empty": None,
            "wrong digest": {"start": second.offset, "end": end, "digest": bytes(32)},
            "wrong types": {"start": str(second.offset), "end": end, "digest": second.digest},
            "points at first item": {"start": 0, "end": len(first.raw), "digest": first.digest},
            "end beyond file": {"start": second.offset, "end": end + 10, "digest": second.digest},
            "start after end": {"start": end, "end": second.offset, "digest": second.digest},
        }
        value = damaged[damage]
        prov.head.write_bytes(b"\xff\x00garbage" if damage == "garbage" else b"" if value is None
                              else dcbor.encode(value))
    record, item = chain.append(prov, signer, builder("third", run=3), new_chain_id=Ids())
    assert record.seq == 2
    assert record.prev == second.digest
    assert record.chain == b"\x01" * 16
    assert item.offset == end
    assert chain.read(prov.chain).items[-1] == item


def test_stale_head_cache_behind_another_writer(prov: ProvenanceDir, signer: Signer) -> None:
    append_n(prov, signer, 1)
    stale = prov.head.read_bytes()
    _, second = chain.append(prov, signer, builder("s1", run=1), new_chain_id=Ids())
    prov.head.write_bytes(stale)  # the cache still describes record 0
    record, item = chain.append(prov, signer, builder("s2", run=2), new_chain_id=Ids())
    assert (record.seq, record.prev, item.offset) == (2, second.digest, second.offset + len(second.raw))


def test_writer_that_bypassed_the_head_cache(prov: ProvenanceDir, signer: Signer, other_keypair: KeyPair) -> None:
    """Another process appended a whole record without updating ``head``: the next append links to it."""
    (_, first), = append_n(prov, signer, 1)
    cached = prov.head.read_bytes()
    foreign_signer = load_signer(other_keypair.key)
    raw = cose.sign(full_record(seq=1, prev=first.digest, chain=b"\x01" * 16).to_cbor(), foreign_signer.private_key)
    fd = os.open(prov.chain, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, raw)
    finally:
        os.close(fd)
    assert prov.head.read_bytes() == cached
    record, item = chain.append(prov, signer, builder("after", run=7), new_chain_id=Ids())
    assert record.seq == 2
    assert record.prev == hashlib.sha256(raw).digest()
    assert item.offset == len(first.raw) + len(raw)
    assert [payload_of(i.raw).seq for i in chain.read(prov.chain).items] == [0, 1, 2]


def test_appends_from_two_provenance_handles_interleave(tmp_path: Path, signer: Signer) -> None:
    one = ProvenanceDir.create(tmp_path / "p")
    two = ProvenanceDir.create(tmp_path / "p")
    for i in range(6):
        chain.append(one if i % 2 else two, signer, builder(run=i), new_chain_id=Ids())
    records = [payload_of(i.raw) for i in chain.read(one.chain).items]
    assert [r.seq for r in records] == list(range(6))
    items = chain.read(one.chain).items
    assert all(records[k].prev == items[k - 1].digest for k in range(1, 6))


# ----------------------------------------------------------------------------------------------------
# torn tails and repair


def test_every_cut_of_the_last_record_is_a_torn_tail(prov: ProvenanceDir, signer: Signer) -> None:
    (_, first), (_, second) = append_n(prov, signer, 2)
    data = prov.chain.read_bytes()
    for cut in range(second.offset + 1, len(data)):
        scan = chain.split(data[:cut])
        assert scan.items == (first,)
        assert scan.torn == (second.offset, cut - second.offset)
    assert chain.split(data[: second.offset]).torn is None


@pytest.mark.parametrize("keep", [1, 100, -1])
def test_torn_tail_reported_refused_and_repaired(prov: ProvenanceDir, signer: Signer, keep: int) -> None:
    ids = Ids()
    (_, first), = append_n(prov, signer, 1, ids)
    checkpoint = prov.checkpoint.read_bytes()
    _, second = chain.append(prov, signer, builder("s1", run=1), new_chain_id=ids)
    prov.checkpoint.write_bytes(checkpoint)  # a crash mid-append: the checkpoint never saw record 1
    full = prov.chain.read_bytes()
    cut = second.offset + (keep if keep > 0 else len(second.raw) + keep)
    torn_bytes = full[second.offset:cut]
    with open(prov.chain, "r+b") as handle:
        handle.truncate(cut)

    with pytest.raises(TornTailError) as info:
        chain.check_appendable(prov)
    error = info.value
    assert (error.offset, error.length, error.records) == (second.offset, len(torn_bytes), 1)
    assert f"byte offset {second.offset}" in str(error) and "asl-chain repair" in str(error)

    seen: list[Head] = []
    objects_before = sorted(prov.root.rglob("*"))
    with pytest.raises(TornTailError) as info2:
        chain.append(prov, signer, builder(seen=seen), new_chain_id=Ids())
    assert info2.value.offset == second.offset
    assert seen == []  # the body was never built
    assert prov.chain.read_bytes() == full[:cut]  # nothing written
    assert sorted(prov.root.rglob("*")) == objects_before

    result = chain.repair(prov)
    assert (result.removed, result.offset, result.records) == (len(torn_bytes), second.offset, 1)
    assert result.saved == prov.root / f"torn-at-{second.offset}.bin"
    assert result.saved.read_bytes() == torn_bytes
    assert prov.chain.read_bytes() == first.raw
    assert not prov.head.exists()

    record, item = chain.append(prov, signer, builder("again", run=9), new_chain_id=Ids())
    assert (record.seq, record.prev, item.offset) == (1, first.digest, len(first.raw))
    assert chain.read(prov.chain).torn is None


def test_torn_first_record(prov: ProvenanceDir, signer: Signer) -> None:
    (_, first), = append_n(prov, signer, 1)
    prov.chain.write_bytes(first.raw[:40])
    prov.checkpoint.unlink()  # a crash mid-append of the first record: no checkpoint was written yet
    with pytest.raises(TornTailError) as info:
        chain.check_appendable(prov)
    assert (info.value.offset, info.value.length, info.value.records) == (0, 40, 0)
    result = chain.repair(prov)
    assert (result.removed, result.offset, result.records) == (40, 0, 0)
    assert prov.chain.read_bytes() == b""
    record, _ = chain.append(prov, signer, builder(), new_chain_id=Ids())
    assert record.seq == 0 and record.prev is None


def test_torn_tail_behind_a_valid_head_cache(prov: ProvenanceDir, signer: Signer) -> None:
    """A crash after the write began but before ``head`` was updated: the cache must not hide the tail."""
    (_, _first), (_, second) = append_n(prov, signer, 2)
    with open(prov.chain, "ab") as handle:
        handle.write(second.raw[:50])
    with pytest.raises(TornTailError) as info:
        chain.append(prov, signer, builder(), new_chain_id=Ids())
    assert info.value.offset == second.offset + len(second.raw)


def test_repair_of_a_whole_chain_changes_nothing(prov: ProvenanceDir, signer: Signer) -> None:
    append_n(prov, signer, 2)
    before = prov.chain.read_bytes()
    result = chain.repair(prov)
    assert (result.removed, result.offset, result.records, result.saved) == (0, len(before), 2, None)
    assert prov.chain.read_bytes() == before
    assert not list(prov.root.glob("torn-at-*"))


def snapshot_dir(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("corruption", ["bad initial byte", "float inside", "length runs past the end"])
def test_repair_refuses_a_corrupt_middle_record(prov: ProvenanceDir, signer: Signer, corruption: str) -> None:
    (_, _first), (_, second), (_, _third) = append_n(prov, signer, 3)
    data = bytearray(prov.chain.read_bytes())
    if corruption == "bad initial byte":
        data[second.offset] = 0xFF
    elif corruption == "float inside":
        data[second.offset + 1] = 0xFA  # the array head becomes a float
    else:
        # d2 84 58 46 <protected: 70 bytes> a0 59 <2-byte payload length>: inflate that length past the end
        assert second.raw[74:76] == b"\xa0\x59"
        data[second.offset + 76 : second.offset + 78] = b"\xff\xff"
    prov.chain.write_bytes(bytes(data))
    before = snapshot_dir(prov.root)
    with pytest.raises(ChainError, match=f"item 1 at byte offset {second.offset}") as info:
        chain.repair(prov)
    assert not isinstance(info.value, TornTailError)
    assert snapshot_dir(prov.root) == before
    prov.head.unlink()  # without the advisory head cache, an append rescans and must refuse too
    with pytest.raises(ChainError, match="item 1") as info2:
        chain.append(prov, signer, builder(), new_chain_id=Ids())
    assert not isinstance(info2.value, TornTailError)
    assert prov.chain.read_bytes() == bytes(data)


def test_unreadable_last_record_is_a_chain_error(prov: ProvenanceDir, signer: Signer) -> None:
    """Well-formed CBOR that is not a step record at the end: appending would fork the chain."""
    append_n(prov, signer, 1)
    prov.head.unlink()
    with open(prov.chain, "ab") as handle:
        handle.write(dcbor.encode(dcbor.Tag(18, [b"", {}, b"", b""])))
    with pytest.raises(ChainError, match="last record cannot be read"):
        chain.append(prov, signer, builder(), new_chain_id=Ids())


def test_read_missing_chain(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="cannot read chain"):
        chain.read(tmp_path / "nope.cbor")


def test_split_names_malformed_items() -> None:
    good = cose.sign(b"\xa0", load_rfc_signer())
    with pytest.raises(ChainError, match=r"x: item 1 at byte offset \d+ is malformed"):
        chain.split(good + b"\xf7", name="x")
    with pytest.raises(ChainError, match="item 0"):
        chain.split(b"\xc1\x00")  # a tag other than 18
    assert chain.split(good * 2, start=len(good)).items == (Item(len(good), good),)


def load_rfc_signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


# ----------------------------------------------------------------------------------------------------
# hostile bytes: only AslError may come out of the reader and the decoder

FUZZ_EXAMPLES = 2000


@pytest.fixture(scope="module")
def real_chain(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("fuzz")
    key, _, _ = generate("fuzz", directory=root / "keys")
    prov = ProvenanceDir.create(root / "prov")
    signer = load_signer(key)
    append_n(prov, signer, 3)
    data = prov.chain.read_bytes()
    assert len(chain.split(data).items) == 3
    return data


@st.composite
def mutations(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "splice", "duplicate"]))
        n = len(data)
        if n == 0:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        at = draw(st.integers(0, n - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.sampled_from([0x00, 0x17, 0x18, 0x1B, 0x1F, 0x3B, 0x5B, 0x7B, 0x9B, 0x9F,
                                             0xBB, 0xBF, 0xD2, 0xF7, 0xFA, 0xFF, draw(st.integers(0, 255))]))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "splice":
            src = draw(st.integers(0, len(base) - 1))
            length = draw(st.integers(1, 200))
            data[at:at] = base[src : src + length]
        else:
            end = draw(st.integers(at, n))
            data[end:end] = data[at:end]
    return bytes(data)


def check_split(data: bytes) -> None:
    try:
        scan = chain.split(data)
    except AslError:
        return
    pos = 0
    for item in scan.items:  # whole items tile the input, and each one decodes on its own
        assert item.offset == pos
        assert data[pos : pos + len(item.raw)] == item.raw
        assert dcbor.decode_item(item.raw, 0, tags=TAGS)[1] == len(item.raw)
        pos += len(item.raw)
    if scan.torn is None:
        assert pos == len(data)
    else:
        assert scan.torn == (pos, len(data) - pos)
        if scan.zeros:  # a zero-filled tail: nothing but zero bytes after the last whole item
            assert data[pos:] == bytes(len(data) - pos)
        else:
            with pytest.raises(TruncatedCbor):
                dcbor.decode_item(data, pos, tags=TAGS)


def check_decode(data: bytes, tags: frozenset[int]) -> None:
    try:
        value = dcbor.decode(data, tags=tags)
    except AslError:
        return
    assert dcbor.encode(value) == data  # whatever is accepted has exactly one encoding: these bytes


def feed(sample: bytes) -> None:
    check_split(sample)
    check_decode(sample, TAGS)
    check_decode(sample, frozenset())
    with contextlib.suppress(AslError):
        dcbor.decode_item(sample, len(sample) // 2, tags=TAGS)


FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                suppress_health_check=list(HealthCheck))


def test_fuzz_mutated_chain_bytes_raise_only_asl_errors(real_chain: bytes) -> None:
    """Byte flips, truncations, insertions, deletions, splices and duplications of a real 3-record chain."""
    calls = 0

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        nonlocal calls
        calls += 1
        feed(data.draw(mutations(real_chain)))

    run()
    assert calls >= FUZZ_EXAMPLES


def test_fuzz_random_bytes_raise_only_asl_errors() -> None:
    calls = 0

    @FUZZ
    @given(sample=st.binary(max_size=512) | st.binary(max_size=8).map(lambda b: b"\xd2\x84" + b))
    def run(sample: bytes) -> None:
        nonlocal calls
        calls += 1
        feed(sample)

    run()
    assert calls >= FUZZ_EXAMPLES


def test_fuzz_sanity_every_single_byte_flip_of_a_real_chain(real_chain: bytes) -> None:
    """Deterministic companion of the property test: all 8 single-bit flips at every byte."""
    for index in range(len(real_chain)):
        for bit in range(8):
            mutated = bytearray(real_chain)
            mutated[index] ^= 1 << bit
            check_split(bytes(mutated))


def test_a_checkpoint_that_cannot_be_written_says_the_record_was_appended(
        prov: ProvenanceDir, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 item 10: a full disk while writing the checkpoint reported the record as not appended."""
    import errno

    from asl_capture.errors import CheckpointError

    append_n(prov, signer, 1)
    older = prov.checkpoint.read_bytes()
    real = os.replace

    def full(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        if Path(target) == prov.checkpoint:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(source, target)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(CheckpointError, match="record seq 1 was appended") as info:
        chain.append(prov, signer, builder("s1", run=1), new_chain_id=Ids())
    monkeypatch.undo()
    assert info.value.seq == 1
    assert len(chain.read(prov.chain).items) == 2 and prov.checkpoint.read_bytes() == older
    assert not list(prov.root.glob(".checkpoint.cose.*"))


def test_no_record_is_appended_without_its_checkpoint(prov: ProvenanceDir, signer: Signer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk when the checkpoint is written stops the append: the checkpoint is written (to a
    temporary file) before the record, so a record never lands without the checkpoint vouching for it."""
    import errno

    from asl_capture import safeio

    append_n(prov, signer, 1)
    before, older = prov.chain.read_bytes(), prov.checkpoint.read_bytes()
    real = safeio.write_all
    chain_inode = prov.chain.stat().st_ino

    def full(fd: int, data: bytes) -> None:
        if os.fstat(fd).st_ino != chain_inode:  # the checkpoint's temporary file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(safeio, "write_all", full)
    with pytest.raises(ChainError, match=r"cannot prepare the checkpoint.*the chain is unchanged"):
        chain.append(prov, signer, builder("s1", run=1), new_chain_id=Ids())
    monkeypatch.undo()
    assert prov.chain.read_bytes() == before and prov.checkpoint.read_bytes() == older
    assert not list(prov.root.glob(".checkpoint.cose.*"))


def test_a_failed_append_is_cut_back(prov: ProvenanceDir, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 item 10: a full disk during the append left a torn tail that blocked every capture."""
    import errno

    from asl_capture import safeio

    append_n(prov, signer, 1)
    before = prov.chain.read_bytes()
    real = safeio.write_all
    chain_inode = prov.chain.stat().st_ino

    def full(fd: int, data: bytes) -> None:
        if os.fstat(fd).st_ino != chain_inode:  # the checkpoint's temporary file: written whole
            real(fd, data)
            return
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safeio, "write_all", full)
    with pytest.raises(ChainError, match=r"cannot append record.*the chain is unchanged"):
        chain.append(prov, signer, builder("s1", run=1), new_chain_id=Ids())
    monkeypatch.undo()
    assert prov.chain.read_bytes() == before
    assert chain.check_appendable(prov).next_seq == 1
    assert not list(prov.root.glob(".checkpoint.cose.*"))


def test_a_crash_between_a_record_and_its_checkpoint_is_completed(prov: ProvenanceDir, signer: Signer) -> None:
    """kill -9 after the record was appended, before its checkpoint was renamed into place: the
    signed checkpoint waits in a temporary file; repair (or the next capture) puts it in place."""
    from asl_capture.keeper import ChainKeeper
    from asl_capture.verify import verify_chain

    append_n(prov, signer, 1)
    pending = prov.root / f"{chain.PENDING_PREFIX}crash"
    os.rename(prov.checkpoint, pending)  # the state the crash leaves
    stale = prov.root / f"{chain.PENDING_PREFIX}stale"
    stale.write_bytes(b"not a checkpoint")
    keys = {signer.kid: signer.private_key.public_key()}
    with pytest.raises(VerificationError, match="run 'asl-chain repair'"):
        verify_chain(prov.root, keys)

    def linkage_holds() -> bool:  # these records name no stored objects: check 5 is the first to fail
        with pytest.raises(VerificationError) as info:
            verify_chain(prov.root, keys)
        return info.value.check == "objects"

    assert chain.repair(prov).removed == 0
    assert linkage_holds() and chain.pending_checkpoints(prov) == []
    os.rename(prov.checkpoint, pending)  # again; now the next capture's key holder completes it
    ChainKeeper.open(prov, signer).close()
    assert linkage_holds() and chain.pending_checkpoints(prov) == []
