"""Money: USD strings from config to Decimal, Ground Truth's allowed task prices, cost estimates.

Money is a `str` in config and a `Decimal` here, never a float (STYLE §3).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from runner.errors import ConfigError
from runner.schema import TaskType

# PublicWorkforceTaskPrice values listed in the SageMaker API reference (API_PublicWorkforceTaskPrice;
# reference §7). NER and multi-label text are not listed: they get the classification list
# (unconfirmed); custom tasks are listed with the classification list.
_CLASSIFICATION_PRICES = tuple(Decimal(p) for p in (
    "0.012", "0.024", "0.036", "0.048", "0.060", "0.072", "0.120", "0.240",
    "0.360", "0.480", "0.600", "0.720", "0.840", "0.960", "1.080", "1.200"))
_BOUNDING_BOX_PRICES = tuple(Decimal(p) for p in (
    "0.036", "0.048", "0.060", "0.072", "0.120", "0.240", "0.360", "0.480",
    "0.600", "0.720", "0.840", "0.960", "1.080", "1.200"))

ALLOWED_PRICES: dict[TaskType, tuple[Decimal, ...]] = {
    TaskType.text_classification: _CLASSIFICATION_PRICES,
    TaskType.text_multilabel: _CLASSIFICATION_PRICES,
    TaskType.bounding_box: _BOUNDING_BOX_PRICES,
    TaskType.named_entity: _CLASSIFICATION_PRICES,
    TaskType.custom: _CLASSIFICATION_PRICES,
}

# USD shape (SageMaker service model): Dollars 0-2, Cents 0-99, TenthFractionsOfACent 0-9.
_MAX_TASK_PRICE = Decimal("2.999")


def parse_usd(text: str | None, key: str) -> Decimal | None:
    """The amount a config string holds, as a Decimal; None when it is unset.

    >>> parse_usd("0.036", "pricing.usd_per_task")
    Decimal('0.036')
    >>> parse_usd(None, "pricing.max_usd") is None
    True
    """
    if text is None:
        return None
    if not isinstance(text, str):
        # A float would already have lost its exact value; config keeps money as strings.
        raise ConfigError(key, f"{text!r} is not a decimal string", 'quote the amount: "0.036"')
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ConfigError(key, f"{text!r} is not a number", 'write US dollars as "0.036"') from None
    if not amount.is_finite():
        raise ConfigError(key, f"{text!r} is not a number", 'write US dollars as "0.036"')
    if amount < 0:
        raise ConfigError(key, f"{text!r} is negative", "amounts are US dollars, 0 or more")
    return amount


def check_price(task_type: TaskType, price: Decimal, key: str) -> None:
    """Nothing when `price` is an allowed Mechanical Turk price for `task_type`, else a ConfigError."""
    allowed = ALLOWED_PRICES[task_type]
    if price not in allowed:
        raise ConfigError(key, f"{str(price)!r} is not a Ground Truth price for {task_type.value}",
                          "use one of " + ", ".join(str(p) for p in allowed))


def task_price(price: Decimal) -> dict[str, dict[str, int]]:
    """The PublicWorkforceTaskPrice for an amount in USD.

    >>> task_price(Decimal("0.036"))
    {'AmountInUsd': {'Dollars': 0, 'Cents': 3, 'TenthFractionsOfACent': 6}}
    >>> task_price(Decimal("1.200"))
    {'AmountInUsd': {'Dollars': 1, 'Cents': 20, 'TenthFractionsOfACent': 0}}
    """
    tenths = price * 1000  # tenths of a cent
    if not price.is_finite() or tenths != tenths.to_integral_value():
        raise ValueError(f"{price} USD is not a whole number of tenths of a cent")
    if not 0 <= price <= _MAX_TASK_PRICE:
        raise ValueError(f"{price} USD is outside the encodable range 0 to {_MAX_TASK_PRICE}")
    n = int(tenths)
    return {"AmountInUsd": {"Dollars": n // 1000, "Cents": n % 1000 // 10,
                            "TenthFractionsOfACent": n % 10}}


@dataclass(frozen=True)
class CostEstimate:
    objects: int
    workers_per_object: int
    usd_per_task: Decimal | None  # None: the workforce is not paid per task (private)
    fee_per_object: Decimal
    worker_usd: Decimal
    fee_usd: Decimal
    total_usd: Decimal


def estimate_cost(objects: int, workers_per_object: int, usd_per_task: Decimal | None,
                  fee_per_object: Decimal) -> CostEstimate:
    """What a job over `objects` data objects costs: worker pay plus Ground Truth's per-object fee.

    >>> estimate_cost(1, 5, Decimal("0.036"), Decimal("0.08")).total_usd
    Decimal('0.260')
    """
    if objects < 0 or workers_per_object < 0:
        raise ValueError(f"objects ({objects}) and workers_per_object ({workers_per_object}) "
                         "must not be negative")
    worker_usd = objects * workers_per_object * (usd_per_task or Decimal(0))
    fee_usd = objects * fee_per_object
    return CostEstimate(objects=objects, workers_per_object=workers_per_object,
                        usd_per_task=usd_per_task, fee_per_object=fee_per_object,
                        worker_usd=worker_usd, fee_usd=fee_usd, total_usd=worker_usd + fee_usd)
