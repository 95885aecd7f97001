"""What `settlement claim`, `account` and `nodes status` print about money and time: W2E from
integers exactly (no floats, 18 decimals), base units next to it, UTC times with validAt."""

from __future__ import annotations

from settlement.cli.claim import EXIT_PENDING, ClaimPending, amount, pending_message, utc


def test_amounts_are_exact_w2e_with_base_units() -> None:
    assert amount(0) == "0 W2E (0 base units)"
    assert amount(1) == "0.000000000000000001 W2E (1 base units)"
    assert amount(12 * 10**18 + 5 * 10**17) == "12.5 W2E (12500000000000000000 base units)"
    big = 2**256 - 1  # far beyond a float's 53 bits: every digit survives
    whole, frac = divmod(big, 10**18)
    assert amount(big) == f"{whole}.{frac:018d} W2E ({big} base units)".replace(
        f"{frac:018d}", f"{frac:018d}".rstrip("0")
    )


def test_the_pending_message_names_amount_epoch_time_and_valid_at() -> None:
    message = pending_message("0x" + "ab" * 20, 12 * 10**18, 7, 1_796_429_403)
    assert message == (
        f"0x{'ab' * 20}: 12 W2E (12000000000000000000 base units) pending in the root of "
        "epoch 7, claimable after 2026-12-05 00:10:03 UTC (validAt 1796429403) once the root "
        "is accepted"
    )
    assert utc(0) == "1970-01-01 00:00:00 UTC"
    assert ClaimPending("x", 5).exit_code == EXIT_PENDING == 5
