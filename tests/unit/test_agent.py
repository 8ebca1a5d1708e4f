"""The signing agent appends only records of running nested captures it admitted, to the head it holds."""

from __future__ import annotations

import dataclasses
import hashlib
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
from asl_capture.format import CHECKPOINT_CONTENT_TYPE, STEP_CONTENT_TYPE, Inputs, Log, Outputs, StepRecord
from asl_capture.keeper import ChainKeeper
from asl_capture.keys import Signer, load_public, load_signer
from asl_capture.store import ProvenanceDir
from tests.conftest import KeyPair
from tests.unit.bodies import minimal_record

EMPTY = hashlib.sha256(b"").digest()


@pytest.fixture
def prov(tmp_path: Path) -> ProvenanceDir:
    return ProvenanceDir.create(tmp_path / "prov")


@pytest.fixture
def signer(keypair: KeyPair) -> Signer:
    return load_signer(keypair.key)


@pytest.fixture
def keeper(signer: Signer, prov: ProvenanceDir) -> Iterator[ChainKeeper]:
    held = ChainKeeper.open(prov, signer)
    yield held
    held.close()


def _agent(keeper: ChainKeeper, signer: Signer, peer: agent.Peer | None = None) -> agent.SigningAgent:
    return agent.SigningAgent(keeper=keeper, kid=signer.kid, public=signer.public_raw(), build_user=peer)


@pytest.fixture
def served(keeper: ChainKeeper, signer: Signer) -> Iterator[agent.SigningAgent]:
    with _agent(keeper, signer) as server:
        yield server


def draft(run_id: bytes, parent: bytes | None, **changes: object) -> StepRecord:
    """A nested record naming only the empty object (which the tests store first)."""
    record = dataclasses.replace(
        minimal_record(), id=run_id, parent=parent,
        inputs=Inputs(manifest=EMPTY, entries=0, files=0),
        outputs=Outputs(manifest=EMPTY, before=EMPTY, changes=EMPTY, entries=0, files=0, created=0, modified=0,
                        deleted=0),
        stdout=Log(digest=EMPTY, size=0), stderr=Log(digest=EMPTY, size=0))
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def put_empty(client: agent.AgentClient) -> None:
    fd = os.memfd_create("empty")
    try:
        assert client.put_fd(fd) == (EMPTY, 0)
    finally:
        os.close(fd)


def nested_append(client: agent.AgentClient, keeper: ChainKeeper) -> StepRecord:
    put_empty(client)
    run_id = client.begin(keeper.own_id)
    record, _raw = client.append(draft(run_id, keeper.own_id))
    return record


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


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the socket to another group needs root")
def test_with_a_build_user_only_its_group_reaches_the_socket(keeper: ChainKeeper, signer: Signer) -> None:
    with _agent(keeper, signer, agent.Peer(uid=65534, gid=65534)) as server:
        directory = os.path.dirname(server.socket_path)
        assert (stat.S_IMODE(os.stat(directory).st_mode), os.stat(directory).st_gid) == (0o710, 65534)
        assert (stat.S_IMODE(os.stat(server.socket_path).st_mode), os.stat(server.socket_path).st_gid) == (0o660, 65534)


def test_nested_records_are_appended_linked_and_checkpointed(
        served: agent.SigningAgent, keeper: ChainKeeper, prov: ProvenanceDir, keypair: KeyPair) -> None:
    client = agent.connect(served.socket_path)
    records = [nested_append(client, keeper) for _ in range(3)]
    assert [r.seq for r in records] == [0, 1, 2]
    key = load_public(keypair.pub)
    items = chain.read(prov.chain).items
    assert len(items) == 3
    for item in items:
        cose.verify(cose.parse(item.value), key)
    checkpoint = cose.parse(dcbor.decode(prov.checkpoint.read_bytes(), tags=cose.COSE_TAGS))
    assert checkpoint.content_type == CHECKPOINT_CONTENT_TYPE
    cose.verify(checkpoint, key)


def test_run_ids_are_handed_out_once_and_a_parent_must_be_running(
        served: agent.SigningAgent, keeper: ChainKeeper) -> None:
    client = agent.connect(served.socket_path)
    ids = {client.begin(keeper.own_id) for _ in range(50)}
    assert len(ids) == 50 and keeper.own_id not in ids
    with pytest.raises(AgentError, match="not a capture of this build that is still running"):
        client.begin(os.urandom(16))  # a random parent
    child = client.begin(keeper.own_id)
    grandchild = client.begin(child)  # a running nested capture may itself nest
    put_empty(client)
    client.append(draft(grandchild, child))
    client.append(draft(child, keeper.own_id))
    with pytest.raises(AgentError, match="not a capture of this build that is still running"):
        client.begin(child)  # it has ended


def test_a_record_is_appended_once_per_admitted_capture(
        served: agent.SigningAgent, keeper: ChainKeeper, prov: ProvenanceDir) -> None:
    client = agent.connect(served.socket_path)
    put_empty(client)
    run_id = client.begin(keeper.own_id)
    client.append(draft(run_id, keeper.own_id))
    size = prov.chain.stat().st_size
    refusals = [
        (draft(run_id, keeper.own_id), "still running"),  # a second record for the same capture
        (draft(os.urandom(16), keeper.own_id), "still running"),  # an id the key holder never handed out
        (draft(keeper.own_id, keeper.own_id), "still running"),  # the key holder's own id
        (draft(client.begin(keeper.own_id), os.urandom(16)), "not the capture that began it"),  # a random parent
        (draft(client.begin(keeper.own_id), None), "parent is null"),
        (draft(client.begin(keeper.own_id), keeper.own_id, ephemeral_key=b"E" * 32), "cannot name a build key"),
        (draft(client.begin(keeper.own_id), keeper.own_id, stdout=Log(digest=b"\x07" * 32, size=3)),
         "not stored"),
    ]
    for record, message in refusals:
        with pytest.raises(AgentError, match=message):
            client.append(record)
    assert prov.chain.stat().st_size == size


def test_the_chain_fields_of_a_draft_are_ignored(served: agent.SigningAgent, keeper: ChainKeeper) -> None:
    """A client cannot choose where its record goes: a forged seq, prev or chain id is overwritten."""
    client = agent.connect(served.socket_path)
    first = nested_append(client, keeper)
    run_id = client.begin(keeper.own_id)
    forged = draft(run_id, keeper.own_id).linked(chain=b"X" * 16, seq=0, prev=None)
    record, _raw = client.append(forged)
    assert (record.chain, record.seq) == (first.chain, 1)


def test_nothing_is_signed_on_request(served: agent.SigningAgent, keeper: ChainKeeper, prov: ProvenanceDir) -> None:
    """The old attack: ask the agent to sign a forged earlier record and a checkpoint for it."""
    client = agent.connect(served.socket_path)
    nested_append(client, keeper)
    head = chain.head_after(chain.read(prov.chain).items[-1])
    forged = draft(b"F" * 16, keeper.own_id, status="failed").linked(chain=head.chain or b"", seq=0, prev=None)
    for content_type, payload in ((STEP_CONTENT_TYPE, forged.to_cbor()),
                                  (CHECKPOINT_CONTENT_TYPE, dcbor.encode({"v": 1, "chain": head.chain, "seq": 0,
                                                                          "digest": b"\x00" * 32}))):
        reply = raw_request(served.socket_path, {"op": "sign", "type": content_type, "payload": payload})
        assert reply["ok"] is False and "unknown request" in str(reply["error"])
    reply = raw_request(served.socket_path, {"op": "export-key"})
    assert reply["ok"] is False and "unknown request" in str(reply["error"])


def test_put_takes_only_a_regular_file(served: agent.SigningAgent) -> None:
    client = agent.connect(served.socket_path)
    read_end, write_end = os.pipe()  # a pipe that never ends would hold the agent forever
    try:
        with pytest.raises(AgentError, match="must be a regular file"):
            client.put_fd(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    reply = raw_request(served.socket_path, {"op": "put"})
    assert reply["ok"] is False and "exactly one file descriptor" in str(reply["error"])


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
            "from asl_capture.errors import AgentError\n"
            "try:\n    agent.connect(sys.argv[1]); r = 'served'\n"
            "except AgentError as e:\n    r = str(e)\n"
            "open(sys.argv[2], 'w').write(r)\n")
    # setsid -f forks and its parent exits: the client is re-parented away from this process
    subprocess.run(["setsid", "-f", sys.executable, "-c", code, served.socket_path, str(out)], check=True,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    deadline = time.monotonic() + 30
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "is not part of the build this agent serves" in out.read_text()


def test_closed_agent_appends_nothing_and_leaves_nothing(
        keeper: ChainKeeper, signer: Signer, prov: ProvenanceDir) -> None:
    server = _agent(keeper, signer)
    path = server.start()
    client = agent.connect(path)
    run_id = client.begin(keeper.own_id)
    server.close()
    server.close()  # idempotent
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    with pytest.raises(AgentError, match="is gone: the enclosing capture has ended"):
        client.append(draft(run_id, keeper.own_id))
    with pytest.raises(AgentError, match="is gone"):
        agent.connect(path)
    assert prov.chain.stat().st_size == 0


def test_connection_opened_before_close_is_refused_after(keeper: ChainKeeper, signer: Signer) -> None:
    server = _agent(keeper, signer)
    path = server.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        time.sleep(0.2)  # accepted by now
        server.close()
        data = dcbor.encode({"v": 1, "op": "begin", "parent": keeper.own_id})
        sock.sendall(struct.pack(">I", len(data)) + data)
        size = struct.unpack(">I", sock.recv(4))[0]
        reply = dcbor.decode(sock.recv(size))
    assert isinstance(reply, dict) and reply["ok"] is False and "has ended" in str(reply["error"])


def test_a_full_connection_queue_is_waited_out(served: agent.SigningAgent, keeper: ChainKeeper) -> None:
    """Many clients at once (a parallel build): none fails because the queue was momentarily full."""
    import threading

    errors: list[str] = []
    ids: list[bytes] = []

    def one() -> None:
        try:
            ids.append(agent.connect(served.socket_path).begin(keeper.own_id))
        except AgentError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=one) for _ in range(300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(ids)) == 300
