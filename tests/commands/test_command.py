"""The command record: its id and its wire form."""

from uuid import UUID, uuid4

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands.command import BadCommand, Command, CommandType, new_command_id

pytestmark = pytest.mark.unit


def test_command_ids_are_random_version_4_uuids() -> None:
    ids = [new_command_id() for _ in range(2_000)]
    assert len(set(ids)) == len(ids)
    for made in ids:
        assert made.version == 4
        assert made.variant == "specified in RFC 4122"
        assert made == UUID(str(made)) == UUID(int=made.int, version=4)


@given(st.sampled_from(list(CommandType)), st.uuids(), st.uuids(), st.text(max_size=20))
def test_a_command_reads_back_as_written(
    kind: CommandType, chat: UUID, actor: UUID, device: str
) -> None:
    command = Command(kind, chat, actor, {"up_to": 3}, device_id=device, request_id="r1")
    assert Command.decode(command.encode()) == command
    wire = orjson.loads(command.encode())
    # The ids are written as str() writes them, whatever writes them.
    assert (wire["chat_id"], wire["actor"], wire["command_id"]) == (
        str(chat),
        str(actor),
        str(command.command_id),
    )
    assert command.key == str(chat).encode()


def test_a_command_with_a_bad_id_is_a_bad_command() -> None:
    good = orjson.loads(Command(CommandType.SEND, uuid4(), uuid4(), {}).encode())
    for name, junk in (("chat_id", "nope"), ("actor", 12), ("command_id", None)):
        with pytest.raises(BadCommand):
            Command.decode(orjson.dumps({**good, name: junk}))
