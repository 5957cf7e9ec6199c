"""Detectors: CPR numbers (dates, century rule, no modulus 11), e-mail, phone, IBAN, custom."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import detectors
from policy.detectors import CPR, EMAIL, IBAN, PHONE


def _mod11_ok(cpr: str) -> bool:
    digits = [int(c) for c in cpr.replace("-", "")]
    return sum(d * w for d, w in zip(digits, (4, 3, 2, 7, 6, 5, 4, 3, 2, 1), strict=True)) % 11 == 0


@pytest.mark.parametrize(
    "text",
    [
        "010190-1234",
        "0101901234",
        "patient 311299-4321, seen today",
        "id:290200-4123",  # 29 Feb 2000 (7th digit 4, year 00 -> 2000, a leap year)
        "290296-5123",  # 29 Feb 1896 (7th digit 5, year 96 -> 1896, a leap year)
        "290260-6123",  # 29 Feb 1860
        "010137-4123",  # 7th digit 4, year 37 -> 1937
    ],
)
def test_cpr_detected(text: str) -> None:
    assert CPR.count(text) == 1


def test_cpr_failing_modulus_11_is_still_detected() -> None:
    assert not _mod11_ok("010190-1234")
    assert CPR.count("010190-1234") == 1
    assert CPR.count("0101901234") == 1


@pytest.mark.parametrize(
    "text",
    [
        "320190-1234",  # day 32
        "000190-1234",  # day 0
        "011390-1234",  # month 13
        "310490-1234",  # 31 April
        "290201-1234",  # 29 Feb 1901
        "290200-0123",  # 29 Feb 1900 (7th digit 0 -> 1900, not a leap year)
        "290200-3123",  # 29 Feb 1900
        "290258-5123",  # 29 Feb 1858 (not a leap year)
    ],
)
def test_cpr_with_invalid_date_not_detected(text: str) -> None:
    assert CPR.count(text) == 0


@pytest.mark.parametrize(
    "text",
    [
        "12010190123456",  # inside a longer run of digits
        "0101901234567",
        "90101901234",
        "010190-12345",
        "9010190-1234",
        "01019-01234",  # hyphen in the wrong place
    ],
)
def test_cpr_inside_longer_digit_runs_not_detected(text: str) -> None:
    assert CPR.count(text) == 0


@given(st.dates(datetime.date(1858, 1, 1), datetime.date(2057, 12, 31)), st.integers(0, 999))
def test_cpr_every_real_birth_date_is_detected(day: datetime.date, serial: int) -> None:
    year = day.year % 100
    if day.year < 1900:
        seventh = 5  # 5-8 with years 58-99 are the 1800s
    elif day.year >= 2000:
        seventh = 4 if year <= 36 else 5
    else:
        seventh = 0
    cpr = f"{day:%d%m}{year:02d}-{seventh}{serial:03d}"
    assert CPR.spans(f"x {cpr} y") == [(2, 13)]


def test_cpr_redaction_replaces_each_number() -> None:
    text, count = CPR.redact("a 010190-1234 b 0202021234 c")
    assert (text, count) == ("a [REDACTED:cpr] b [REDACTED:cpr] c", 2)


def test_email() -> None:
    text = "write to anna.hansen+ward@regionh.dk or ops@it.example.org, not to @handle or a@b"
    redacted, count = EMAIL.redact(text)
    assert count == 2
    assert redacted == "write to [REDACTED:email] or [REDACTED:email], not to @handle or a@b"


@pytest.mark.parametrize(
    "text", ["+45 12 34 56 78", "12345678", "1234 5678", "0045 12345678", "+44 20 7946 0958"]
)
def test_phone_detected(text: str) -> None:
    assert PHONE.spans(f"call {text} now") == [(5, 5 + len(text))]


@pytest.mark.parametrize("text", ["123456789", "1234567", "order 12345678901"])
def test_phone_other_digit_runs_not_detected(text: str) -> None:
    assert PHONE.count(text) == 0


@pytest.mark.parametrize(
    "iban",
    [
        "DK5000400440116243",
        "DK50 0040 0440 1162 43",
        "GB82 WEST 1234 5698 7654 32",
        "gb82west12345698765432",
    ],
)
def test_iban_valid_checksum_detected(iban: str) -> None:
    assert IBAN.spans(f"pay to {iban}.") == [(7, 7 + len(iban))]


def test_iban_bad_checksum_not_detected() -> None:
    assert IBAN.count("DK50 0040 0440 1162 44") == 0
    assert IBAN.count("GB82 WEST 1234 5698 7654 33") == 0


def test_iban_followed_by_words_is_trimmed_to_the_valid_part() -> None:
    text = "IBAN DK5000400440116243 OK THANKS"
    assert IBAN.redact(text) == ("IBAN [REDACTED:iban] OK THANKS", 1)


def test_iban_after_a_false_candidate_is_still_found() -> None:
    # "AB12 SEE" starts a candidate that swallows the real IBAN; the rescan must find it.
    assert IBAN.count("AB12 SEE DK5000400440116243") == 1


def test_custom_pattern() -> None:
    detector = detectors.custom("patient_record", r"PRN-?\d{7}", ignore_case=True)
    assert detector.redact("prn1234567 and PRN-7654321") == (
        "[REDACTED:patient_record] and [REDACTED:patient_record]",
        2,
    )


def test_custom_pattern_errors() -> None:
    with pytest.raises(ValueError, match="invalid regular expression"):
        detectors.custom("x", "(")
    with pytest.raises(ValueError, match="matches the empty string"):
        detectors.custom("x", "a?")


def test_zero_width_custom_match_does_not_loop() -> None:
    detector = detectors.custom("x", r"(?=a)")
    assert detector.redact("banana") == ("banana", 0)


def test_scan_of_a_long_prompt_stays_linear() -> None:
    # Runs of address characters without an '@', and digits, are the worst case for the patterns.
    text = ("a" * 50_000 + " ") * 4 + "1" * 100_000
    for detector in detectors.BUILTIN.values():
        assert detector.count(text) == 0
