"""Multipart uploads: how a big file is cut into parts, and the checks each step must pass.

Pure rules, asked by the commands service: the plan when an upload is requested (part
size within bounds, not too many parts), the part numbers a client asks URLs for, and
the parts it lists to complete the upload against those the store holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from domain.media import BadUpload, MediaError, SizeMismatch

MIB = 1024 * 1024


class BadPartNumber(MediaError):
    """A part number outside 1..parts, repeated, or a completion that lacks one."""

    code = "bad_part_number"
    default_message = "part numbers go from 1 to the upload's number of parts, each once"


class TooManyParts(MediaError):
    code = "too_many_parts"
    default_message = "more parts than the upload allows"


class PartMismatch(MediaError):
    """A listed part is not in the store, or the store holds other bytes (another ETag)."""

    code = "part_mismatch"
    default_message = "a listed part was not uploaded, or its ETag is not the stored one"


class UploadExpired(MediaError):
    code = "upload_expired"
    default_message = "the multipart upload expired; start a new upload"


@dataclass(frozen=True, slots=True)
class PartLimits:
    """Bounds on the parts of one upload."""

    min_part: int
    max_part: int
    max_parts: int


@dataclass(frozen=True, slots=True)
class PartPlan:
    """A file of `size` bytes in `parts` parts of `part_size` bytes (the last one less)."""

    size: int
    part_size: int

    @property
    def parts(self) -> int:
        return -(-self.size // self.part_size)

    def size_of(self, number: int) -> int:
        """How many bytes part `number` (1-based) must have."""
        if number < self.parts:
            return self.part_size
        return self.size - (self.parts - 1) * self.part_size


def plan_parts(size: int, part_size: object, limits: PartLimits) -> PartPlan:
    """Cut `size` bytes into parts: of `part_size` if the client chose one (within the
    bounds), else of the smallest whole MiB within the bounds that needs no more than
    `max_parts` parts."""
    if part_size is None:
        needed = -(-size // limits.max_parts)
        chosen = max(limits.min_part, -(-needed // MIB) * MIB)
        if chosen > limits.max_part:
            raise TooManyParts(f"{size} bytes need parts larger than {limits.max_part}")
    elif isinstance(part_size, bool) or not isinstance(part_size, int):
        raise BadUpload("part_size must be an integer (bytes)")
    elif not limits.min_part <= part_size <= limits.max_part:
        raise BadUpload(f"part_size must be from {limits.min_part} to {limits.max_part} bytes")
    else:
        chosen = part_size
    plan = PartPlan(size, chosen)
    if plan.parts > limits.max_parts:
        raise TooManyParts(f"{plan.parts} parts; at most {limits.max_parts}")
    return plan


def check_part_numbers(numbers: object, plan: PartPlan) -> list[int]:
    """The part numbers a client asks upload URLs for: 1..parts, each at most once."""
    if not isinstance(numbers, list) or not numbers:
        raise BadPartNumber("part_numbers must be a non-empty list")
    if len(numbers) > plan.parts:
        raise TooManyParts(f"the upload has {plan.parts} parts")
    if any(not _is_part(n, plan) for n in numbers) or len(set(numbers)) != len(numbers):
        raise BadPartNumber(f"part numbers go from 1 to {plan.parts}, each once")
    return list(numbers)


def check_completion(
    listed: object, plan: PartPlan, stored: Mapping[int, tuple[str, int]]
) -> list[tuple[int, str]]:
    """The parts a client lists to complete the upload, checked against what the store
    holds (`stored`: part number -> ETag, size); `(number, etag)` in order."""
    if not isinstance(listed, list) or not all(isinstance(p, dict) for p in listed):
        raise BadPartNumber("parts must be a list of {part_number, etag}")
    if len(listed) > plan.parts:
        raise TooManyParts(f"the upload has {plan.parts} parts")
    numbers = [p.get("part_number") for p in listed]
    if sorted(n for n in numbers if _is_part(n, plan)) != list(range(1, plan.parts + 1)):
        raise BadPartNumber(f"list each part from 1 to {plan.parts} once")
    parts: list[tuple[int, str]] = []
    for part in sorted(listed, key=lambda p: int(p["part_number"])):
        number, etag = int(part["part_number"]), part.get("etag")
        if not isinstance(etag, str) or number not in stored:
            raise PartMismatch(f"part {number} was not uploaded")
        stored_etag, stored_size = stored[number]
        if etag.strip('"') != stored_etag:
            raise PartMismatch(f"part {number}: the store holds another ETag")
        if stored_size != plan.size_of(number):
            raise SizeMismatch(f"part {number} has {stored_size} bytes, not {plan.size_of(number)}")
        parts.append((number, stored_etag))
    return parts


def _is_part(number: object, plan: PartPlan) -> bool:
    return isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= plan.parts
