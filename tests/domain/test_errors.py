import pytest

import domain
from domain import DomainError

pytestmark = pytest.mark.unit

ERROR_CODES = {
    domain.NotMember: "not_member",
    domain.NotAdmin: "not_admin",
    domain.GroupFull: "group_full",
    domain.TooLarge: "too_large",
    domain.UnknownChat: "unknown_chat",
    domain.InvalidSeq: "invalid_seq",
    domain.InvalidBody: "invalid_body",
    domain.InvalidGroup: "invalid_group",
    domain.LastAdmin: "last_admin",
    domain.NotDirect: "not_direct",
    domain.NotGroup: "not_group",
}


@pytest.mark.parametrize(("error", "code"), ERROR_CODES.items())
def test_each_error_has_its_stable_code(error: type[DomainError], code: str) -> None:
    assert issubclass(error, DomainError)
    assert error.code == code
    assert error().message == error.default_message


def test_codes_are_unique() -> None:
    assert len(set(ERROR_CODES.values())) == len(ERROR_CODES)


def test_a_message_can_be_given() -> None:
    error = domain.NotMember("you left this group")
    assert str(error) == error.message == "you left this group"
    assert error.code == "not_member"
