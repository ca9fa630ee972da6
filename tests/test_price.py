from dataclasses import FrozenInstanceError
from decimal import Decimal

import pytest

from runner.build.price import (
    ALLOWED_PRICES,
    CostEstimate,
    check_price,
    estimate_cost,
    parse_usd,
    task_price,
)
from runner.errors import ConfigError
from runner.schema import TaskType


@pytest.mark.parametrize(("text", "expected"), [
    ("0.036", Decimal("0.036")),
    (" 1.20 ", Decimal("1.20")),
    ("100", Decimal("100")),
    ("0", Decimal("0")),
    ("1e-3", Decimal("0.001")),
    (None, None),
])
def test_parse_usd_reads_decimal_strings(text, expected):
    assert parse_usd(text, "pricing.max_usd") == expected


@pytest.mark.parametrize("text", ["abc", "", "$0.036", "0,036", "-0.012", "NaN", "Infinity", 0.036])
def test_parse_usd_rejects_non_numbers_negatives_and_floats(text):
    with pytest.raises(ConfigError, match=r"^pricing\.usd_per_task: ") as info:
        parse_usd(text, "pricing.usd_per_task")
    assert info.value.key == "pricing.usd_per_task"


@pytest.mark.parametrize(("usd", "dollars", "cents", "tenths"), [
    ("0", 0, 0, 0),
    ("0.001", 0, 0, 1),
    ("0.009", 0, 0, 9),
    ("0.010", 0, 1, 0),
    ("0.012", 0, 1, 2),
    ("0.036", 0, 3, 6),
    ("0.0360", 0, 3, 6),
    ("0.099", 0, 9, 9),
    ("0.1", 0, 10, 0),
    ("0.999", 0, 99, 9),
    ("1", 1, 0, 0),
    ("1.200", 1, 20, 0),
    ("2.999", 2, 99, 9),
])
def test_task_price_encodes_dollars_cents_and_tenths(usd, dollars, cents, tenths):
    assert task_price(Decimal(usd)) == {"AmountInUsd": {
        "Dollars": dollars, "Cents": cents, "TenthFractionsOfACent": tenths}}


@pytest.mark.parametrize("usd", ["3", "3.000", "2.9991", "0.0005", "0.0361", "-0.001", "NaN"])
def test_task_price_rejects_what_cannot_be_encoded(usd):
    with pytest.raises(ValueError):
        task_price(Decimal(usd))


@pytest.mark.parametrize("task_type", list(TaskType))
def test_every_allowed_price_encodes_back_to_itself(task_type):
    assert ALLOWED_PRICES[task_type]
    for price in ALLOWED_PRICES[task_type]:
        amount = task_price(price)["AmountInUsd"]
        assert (amount["Dollars"] + Decimal(amount["Cents"]) / 100
                + Decimal(amount["TenthFractionsOfACent"]) / 1000) == price


@pytest.mark.parametrize(("task_type", "usd"), [
    (TaskType.text_classification, "0.012"),
    (TaskType.text_multilabel, "0.024"),
    (TaskType.named_entity, "0.036"),
    (TaskType.custom, "1.200"),
    (TaskType.bounding_box, "0.036"),
    (TaskType.bounding_box, "0.0360"),
    (TaskType.bounding_box, "1.2"),
])
def test_allowed_prices_pass(task_type, usd):
    check_price(task_type, Decimal(usd), "pricing.usd_per_task")


@pytest.mark.parametrize(("task_type", "usd"), [
    (TaskType.bounding_box, "0.012"),  # the classification list starts lower
    (TaskType.bounding_box, "0.024"),
    (TaskType.text_classification, "0.05"),
    (TaskType.text_classification, "1.300"),
    (TaskType.custom, "0"),
])
def test_disallowed_prices_fail_with_the_allowed_list(task_type, usd):
    with pytest.raises(ConfigError, match=r"^pricing\.usd_per_task: ") as info:
        check_price(task_type, Decimal(usd), "pricing.usd_per_task")
    first = ALLOWED_PRICES[task_type][0]
    assert f"hint: use one of {first}, " in str(info.value)


def test_cost_estimate_matches_aws_worked_examples():
    # Reference §7: 5 workers at $0.036 plus the $0.08 fee is $0.26 per image; 3 at $0.012, $0.116.
    assert estimate_cost(1, 5, Decimal("0.036"), Decimal("0.08")).total_usd == Decimal("0.26")
    assert estimate_cost(1, 3, Decimal("0.012"), Decimal("0.08")).total_usd == Decimal("0.116")


def test_cost_estimate_is_exact_decimal():
    cost = estimate_cost(1000, 3, Decimal("0.012"), Decimal("0.08"))
    assert cost == CostEstimate(objects=1000, workers_per_object=3, usd_per_task=Decimal("0.012"),
                                fee_per_object=Decimal("0.08"), worker_usd=Decimal("36.000"),
                                fee_usd=Decimal("80.00"), total_usd=Decimal("116.000"))
    # 0.1 + 0.2 style sums stay exact: no float anywhere.
    tiny = estimate_cost(3, 1, Decimal("0.1"), Decimal("0.2"))
    assert tiny.worker_usd == Decimal("0.3") and tiny.total_usd == Decimal("0.9")
    for value in (cost.worker_usd, cost.fee_usd, cost.total_usd):
        assert type(value) is Decimal


def test_cost_estimate_without_a_task_price_is_the_fee_only():
    cost = estimate_cost(250, 3, None, Decimal("0.08"))
    assert cost.usd_per_task is None
    assert cost.worker_usd == 0
    assert cost.fee_usd == cost.total_usd == Decimal("20.00")


def test_cost_estimate_of_nothing_is_zero_and_frozen():
    cost = estimate_cost(0, 3, Decimal("0.036"), Decimal("0.08"))
    assert cost.total_usd == 0
    with pytest.raises(FrozenInstanceError):
        cost.total_usd = Decimal(1)  # type: ignore[misc]


def test_cost_estimate_rejects_negative_counts():
    with pytest.raises(ValueError):
        estimate_cost(-1, 3, Decimal("0.036"), Decimal("0.08"))
