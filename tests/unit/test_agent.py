"""The signing agent signs only the next nested record or checkpoint of its own chain, only while open."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asl_capture import agent, chain, cose, dcbor, prctl
from asl_capture.errors import AgentError
from asl_capture.format import CHECKPOINT_CONTENT_TYPE, STEP_CONTENT_TYPE, StepRecord
from asl_capture.keys import Signer, load_signer
from asl_capture.store import ProvenanceDir
from tests.conftest import KeyPair
from tests.unit.bodies import minimal_record


@pytest.fixture
def prov(tmp_path: Path) -> ProvenanceDir:
    return ProvenanceDir.create(tmp_path / "prov")


@pytest.fixture
def signer(keypair: KeyPair) -> Signer:
    return load_signer(keypair.key)


@pytest.fixture
def served(signer: Signer, prov: ProvenanceDir) -> Iterator[agent.SigningAgent]:
    with agent.SigningAgent(signer=signer, prov=prov) as server:
        yield server


def nested(parent: bytes | None = b"P" * 16) -> StepRecord:
    return dataclasses.replace(minimal_record(), parent=parent)


def append_through(client: agent.AgentSigner, prov: ProvenanceDir, record: StepRecord) -> None:
    chain.append(prov, client, lambda _head: record, new_chain_id=lambda: b"C" * 16)


def placed(head: chain.Head, *, seq: int | None = None, prev: bytes | None = None, chain_id: bytes | None = None,
           **changes: object) -> bytes:
    record = dataclasses.replace(nested(), **changes)  # type: ignore[arg-type]
    return record.linked(chain=chain_id or head.chain or b"C" * 16, seq=head.next_seq if seq is None else seq,
                         prev=prev).to_cbor()


def raw_request(path: str, request: dict[str, dcbor.Value]) -> dict[str, dcbor.Value]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        data = dcbor.encode({"v": 1, **request})
        sock.sendall(struct.pack(">I", len(data)) + data)
        size = struct.unpack(">I", sock.recv(4))[0]
        reply = b""
        while len(reply) < size:
            reply += sock.recv(size - len(reply))
    value = dcbor.decode(reply)
    assert isinstance(value, dict)
    return value


def test_hello_names_key_and_chain_and_the_socket_is_private(
        served: agent.SigningAgent, signer: Signer, prov: ProvenanceDir) -> None:
    client = agent.connect(served.socket_path)
    assert client.kid == signer.kid and client.public == signer.public_raw()
    assert client.provenance == prov.root
    directory = os.path.dirname(served.socket_path)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert os.stat(directory).st_uid == os.geteuid()
    assert stat.S_ISSOCK(os.stat(served.socket_path).st_mode)
    assert stat.S_IMODE(os.stat(served.socket_path).st_mode) == 0o600
    assert not prctl.is_dumpable()


def test_nested_records_and_checkpoints_are_signed(
        served: agent.SigningAgent, prov: ProvenanceDir, keypair: KeyPair) -> None:
    client = agent.connect(served.socket_path)
    for _ in range(3):
        append_through(client, prov, nested())
    from asl_capture.keys import load_public

    key = load_public(keypair.pub)
    items = chain.read(prov.chain).items
    assert len(items) == 3
    for item in items:
        cose.verify(cose.parse(item.value), key)
    checkpoint = cose.parse(dcbor.decode(prov.checkpoint.read_bytes(), tags=cose.COSE_TAGS))
    assert checkpoint.content_type == CHECKPOINT_CONTENT_TYPE
    cose.verify(checkpoint, key)


def test_top_level_record_is_refused(served: agent.SigningAgent, prov: ProvenanceDir) -> None:
    client = agent.connect(served.socket_path)
    with pytest.raises(AgentError, match="parent is null"):
        append_through(client, prov, nested(parent=None))
    assert prov.chain.stat().st_size == 0


def test_record_that_does_not_extend_the_head_is_refused(served: agent.SigningAgent, prov: ProvenanceDir) -> None:
    client = agent.connect(served.socket_path)
    append_through(client, prov, nested())
    head = chain.current_head(prov)
    for seq, prev in ((head.next_seq + 1, head.prev), (head.next_seq, b"\x00" * 32), (0, None)):
        with pytest.raises(AgentError, match="not the next record"):
            client.sign_message(placed(head, seq=seq, prev=prev), content_type=STEP_CONTENT_TYPE)
    with pytest.raises(AgentError, match="another chain"):
        client.sign_message(placed(head, prev=head.prev, chain_id=b"X" * 16), content_type=STEP_CONTENT_TYPE)


def test_other_payloads_and_content_types_are_refused(served: agent.SigningAgent, prov: ProvenanceDir) -> None:
    client = agent.connect(served.socket_path)
    append_through(client, prov, nested())
    append_through(client, prov, nested())
    head = chain.current_head(prov)
    with pytest.raises(AgentError, match="not a well-formed step record"):
        client.sign_message(b"arbitrary bytes", content_type=STEP_CONTENT_TYPE)
    with pytest.raises(AgentError, match="not signed by this agent"):
        client.sign_message(b"\xa0", content_type="application/vnd.asl.release+cbor")
    with pytest.raises(AgentError, match="not signed by this agent"):
        client.sign_message(b"\xa0", content_type="text/plain")
    stale = dcbor.encode({"v": 1, "chain": head.chain, "seq": head.next_seq - 2, "digest": b"\x00" * 32})
    with pytest.raises(AgentError, match="current last record"):
        client.sign_message(stale, content_type=CHECKPOINT_CONTENT_TYPE)
    with pytest.raises(AgentError, match="version-1 checkpoint"):
        client.sign_message(dcbor.encode({"v": 1}), content_type=CHECKPOINT_CONTENT_TYPE)
    with pytest.raises(AgentError, match="cannot name a build key"):
        client.sign_message(placed(head, prev=head.prev, ephemeral_key=b"E" * 32), content_type=STEP_CONTENT_TYPE)
    reply = raw_request(served.socket_path, {"op": "export-key"})
    assert reply["ok"] is False and "unknown request" in str(reply["error"])


def test_oversized_request_is_refused(served: agent.SigningAgent) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(served.socket_path)
        sock.sendall(struct.pack(">I", agent.MAX_MESSAGE + 1))
        size = struct.unpack(">I", sock.recv(4))[0]
        reply = dcbor.decode(sock.recv(size))
    assert isinstance(reply, dict) and reply["ok"] is False and "exceeds the limit" in str(reply["error"])


def test_process_outside_the_build_is_refused(served: agent.SigningAgent, tmp_path: Path) -> None:
    """A process of the same user that is not a descendant of the agent's process gets nothing."""
    out = tmp_path / "out"
    code = ("import sys; from asl_capture import agent\n"
            "try:\n    agent.connect(sys.argv[1]); r = 'signed'\n"
            "except Exception as e:\n    r = str(e)\n"
            "open(sys.argv[2], 'w').write(r)\n")
    # setsid -f forks and its parent exits: the client is re-parented away from this process
    subprocess.run(["setsid", "-f", sys.executable, "-c", code, served.socket_path, str(out)], check=True,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    deadline = time.monotonic() + 30
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "is not part of the build this agent serves" in out.read_text()


def test_closed_agent_signs_nothing_and_leaves_nothing(signer: Signer, prov: ProvenanceDir) -> None:
    server = agent.SigningAgent(signer=signer, prov=prov)
    path = server.start()
    client = agent.connect(path)
    server.close()
    server.close()  # idempotent
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    with pytest.raises(AgentError, match="not reachable"):
        append_through(client, prov, nested())
    with pytest.raises(AgentError, match="not reachable"):
        agent.connect(path)
    assert prov.chain.stat().st_size == 0 if prov.chain.exists() else True


def test_connection_opened_before_close_is_refused_after(signer: Signer, prov: ProvenanceDir) -> None:
    server = agent.SigningAgent(signer=signer, prov=prov)
    path = server.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        time.sleep(0.2)  # accepted by now
        server.close()
        payload = nested().linked(chain=b"C" * 16, seq=0, prev=None).to_cbor()
        data = dcbor.encode({"v": 1, "op": "sign", "type": STEP_CONTENT_TYPE, "payload": payload})
        sock.sendall(struct.pack(">I", len(data)) + data)
        size = struct.unpack(">I", sock.recv(4))[0]
        reply = dcbor.decode(sock.recv(size))
    assert isinstance(reply, dict) and reply["ok"] is False and "has ended" in str(reply["error"])
