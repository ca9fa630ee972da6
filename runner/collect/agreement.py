"""Inter-annotator agreement: chance-corrected coefficients and pairwise overlap scores.

Pure: stdlib only (no runner.schema, so no omegaconf), no I/O. The coefficients come both as a
function over a list of units and as an accumulator (`add` one object at a time, `value` at the
end), so the quality report can stream over a job's objects once and keep only the counts.

A unit is one data object's answers, one value per worker who answered it. Units with fewer than
two answers carry no information on agreement and are left out everywhere.

Undefined coefficients are None: no unit with two answers, or (alpha, kappa) no variation at all
(every answer the same value: expected disagreement 0, so the coefficient is 0/0).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from itertools import combinations
from typing import TypeVar

T = TypeVar("T")

# (label, left, top, width, height): one box of one worker.
LabeledBox = tuple[str, float, float, float, float]
# (label, start, end): one span of one worker, end exclusive.
LabeledSpan = tuple[str, int, int]


# --- Krippendorff's alpha (nominal) -------------------------------------------------------------


class AlphaNominal:
    """Krippendorff's alpha for nominal data, accumulated one unit at a time.

    The coincidence matrix o[c][k] is never stored: nominal alpha needs only the value totals n_c
    and the observed disagreement (the off-diagonal sum of o), since
    alpha = 1 - (n - 1) * sum_{c!=k} o_ck / (n^2 - sum_c n_c^2)   (Krippendorff 2011, eq. for D_o/D_e).
    """

    def __init__(self) -> None:
        self.totals: Counter[Hashable] = Counter()  # n_c: pairable values per category
        self.disagreement = 0.0  # sum over c != k of o_ck

    def add(self, values: Iterable[Hashable]) -> None:
        counts = Counter(values)
        m = sum(counts.values())
        if m < 2:
            return  # not pairable
        self.totals.update(counts)
        same = sum(n * (n - 1) for n in counts.values())  # ordered pairs of equal values
        self.disagreement += (m * (m - 1) - same) / (m - 1)

    def value(self) -> float | None:
        n = sum(self.totals.values())
        if n == 0:
            return None
        expected = n * n - sum(c * c for c in self.totals.values())  # sum_{c!=k} n_c n_k
        if expected == 0:
            return None  # a single value throughout: alpha is undefined
        return 1.0 - (n - 1) * self.disagreement / expected

    @property
    def pairable(self) -> int:
        """How many values entered the coefficient (n in Krippendorff's notation)."""
        return sum(self.totals.values())


def krippendorff_alpha_nominal(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal values; `units` holds each object's answers.

    Units with fewer than two answers are ignored (missing data, in Krippendorff's terms). None
    when nothing is pairable or every pairable value is the same.

    >>> round(krippendorff_alpha_nominal([["a", "a"], ["b", "b"], ["a", "b"]]), 4)
    0.4444
    """
    acc = AlphaNominal()
    for unit in units:
        acc.add(unit)
    return acc.value()


# --- Fleiss' kappa ------------------------------------------------------------------------------


class FleissKappa:
    """Fleiss' kappa, accumulated one unit at a time, kept apart by the number of raters.

    Fleiss (1971) assumes every subject has the same number of raters m. Units are grouped by their
    number of answers; `value` uses the group with the most units (a tie goes to the larger m),
    and `raters`/`units`/`skipped` say which group that was and how many units were left out.
    """

    def __init__(self) -> None:
        # m -> [units, sum of P_i, category totals]
        self._groups: dict[int, tuple[int, float, Counter[Hashable]]] = {}

    def add(self, values: Iterable[Hashable]) -> None:
        counts = Counter(values)
        m = sum(counts.values())
        if m < 2:
            return
        n, p_sum, totals = self._groups.get(m, (0, 0.0, Counter()))
        totals.update(counts)
        p_i = (sum(c * c for c in counts.values()) - m) / (m * (m - 1))
        self._groups[m] = (n + 1, p_sum + p_i, totals)

    @property
    def raters(self) -> int | None:
        """The number of raters per unit kappa is computed for; None without a pairable unit."""
        if not self._groups:
            return None
        return max(self._groups, key=lambda m: (self._groups[m][0], m))

    @property
    def units(self) -> int:
        m = self.raters
        return 0 if m is None else self._groups[m][0]

    @property
    def skipped(self) -> int:
        """Pairable units left out because they have another number of raters."""
        return sum(g[0] for g in self._groups.values()) - self.units

    def value(self) -> float | None:
        m = self.raters
        if m is None:
            return None
        n, p_sum, totals = self._groups[m]
        p_bar = p_sum / n
        p_e = sum((t / (n * m)) ** 2 for t in totals.values())
        if p_e >= 1.0:
            return None  # one category throughout
        return (p_bar - p_e) / (1.0 - p_e)


def fleiss_kappa(units: Sequence[Sequence[Hashable]],
                 categories: Sequence[Hashable] = ()) -> float | None:
    """Fleiss' kappa over the units with the most common number of answers (ties: the larger).

    Fleiss' kappa is defined for a fixed number of raters per subject; units with another number
    of answers are skipped (`FleissKappa` says how many). `categories` only documents the
    category set: a category no one chose adds nothing to P_e, and a value outside it counts as a
    category of its own. None when no unit has two answers or all answers are one category.

    >>> round(fleiss_kappa([["a", "a"], ["b", "b"], ["a", "b"]], ["a", "b"]), 4)
    0.3333
    """
    del categories  # see docstring: the observed values define p_j
    acc = FleissKappa()
    for unit in units:
        acc.add(unit)
    return acc.value()


def fleiss_kappa_table(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from a subjects x categories count table (Fleiss 1971's own layout)."""
    acc = FleissKappa()
    for row in table:
        acc.add(c for c, n in enumerate(row) for _ in range(n))
    return acc.value()


# --- boxes ---------------------------------------------------------------------------------------


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (left, top, width, height) boxes; 0 for empty boxes.

    The same formula as runner.service.consolidate's matching, kept here so this module needs no
    runner.schema (and so no omegaconf).

    >>> box_iou((0, 0, 10, 10), (5, 0, 10, 10))
    0.3333333333333333
    >>> box_iou((925.18, 201.74, 27.03, 68.24), (925.18, 201.74, 27.03, 68.24))
    1.0
    """
    if tuple(a[:4]) == tuple(b[:4]) and a[2] > 0 and a[3] > 0:
        # the same box: (left + width) - left need not give width back in floating point, and
        # an IoU of 0.9999999999999982 would list workers who drew the very same box as disputed
        return 1.0
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def matched_iou(a: Sequence[LabeledBox], b: Sequence[LabeledBox]) -> float:
    """Agreement of two workers' boxes: greedy same-label matching by IoU, unmatched boxes 0.

    Pairs of boxes with the same label are matched best IoU first, each box at most once (only
    pairs that overlap). The score is the sum of matched IoUs over matched pairs + unmatched boxes
    on either side, so a box one worker drew and the other did not pulls the score down. Two
    workers who both drew nothing agree: 1.0.

    >>> matched_iou([("cat", 0, 0, 10, 10), ("dog", 50, 50, 5, 5)], [("cat", 0, 0, 10, 10)])
    0.5
    """
    if not a and not b:
        return 1.0
    pairs = sorted(((box_iou(x[1:], y[1:]), i, j) for i, x in enumerate(a)
                    for j, y in enumerate(b) if x[0] == y[0]), key=lambda p: (-p[0], p[1], p[2]))
    used_a: set[int] = set()
    used_b: set[int] = set()
    total = 0.0
    for iou, i, j in pairs:
        if iou <= 0.0:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            total += iou
    return total / (len(a) + len(b) - len(used_a))


def mean_pairwise_iou(answers_boxes: Sequence[Sequence[LabeledBox]]) -> float | None:
    """One object's box agreement: `matched_iou` averaged over every pair of its workers.

    `answers_boxes` holds one list of boxes per worker. None with fewer than two workers.

    >>> mean_pairwise_iou([[("cat", 0, 0, 10, 10)], [("cat", 0, 0, 10, 10)], []])
    0.3333333333333333
    """
    return mean_pairwise(answers_boxes, matched_iou)


# --- spans ---------------------------------------------------------------------------------------


def span_f1(a_spans: Collection[LabeledSpan], b_spans: Collection[LabeledSpan]) -> float:
    """F1 of one worker's spans against another's, exact match on (label, start, end).

    Symmetric: 2 |A and B| / (|A| + |B|), duplicates counted as often as they occur. Two workers
    who both marked nothing agree: 1.0.

    >>> span_f1([("PER", 0, 5), ("LOC", 9, 15)], [("PER", 0, 5), ("ORG", 9, 15)])
    0.5
    """
    if not a_spans and not b_spans:
        return 1.0
    common = sum((Counter(a_spans) & Counter(b_spans)).values())
    return 2.0 * common / (len(a_spans) + len(b_spans))


def mean_pairwise_span_f1(answers_spans: Sequence[Collection[LabeledSpan]]) -> float | None:
    """One object's span agreement: `span_f1` averaged over every pair of its workers."""
    return mean_pairwise(answers_spans, span_f1)


# --- label sets and per-label agreement ----------------------------------------------------------


def set_jaccard(a: Collection[Hashable], b: Collection[Hashable]) -> float:
    """Jaccard index of two workers' label sets (multi-label); two empty sets agree: 1.0."""
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def mean_pairwise(answers: Sequence[T], score: Callable[[T, T], float]) -> float | None:
    """`score` averaged over every unordered pair of answers; None with fewer than two."""
    scores = [score(a, b) for a, b in combinations(answers, 2)]
    return sum(scores) / len(scores) if scores else None


class LabelAgreement:
    """Per label: the mean score of the worker pairs in which at least one worker used the label."""

    def __init__(self) -> None:
        self.pairs: Counter[str] = Counter()
        self.total: dict[str, float] = {}

    def add(self, label: str, score: float) -> None:
        self.pairs[label] += 1
        self.total[label] = self.total.get(label, 0.0) + score

    def add_unit(self, answers: Sequence[str | Collection[str]]) -> None:
        """One object's answers, each a label (single-label) or a set of labels (multi-label).

        For each pair of workers and each label either of them chose, the pair agrees on the label
        when both chose it.
        """
        chosen = [{a} if isinstance(a, str) else set(a) for a in answers]
        for x, y in combinations(chosen, 2):
            for label in x | y:
                self.add(label, 1.0 if label in x and label in y else 0.0)

    def value(self, label: str) -> float | None:
        n = self.pairs[label]
        return self.total[label] / n if n else None


def per_label_agreement(units: Sequence[Sequence[str | Collection[str]]],
                        labels: Sequence[str] = ()) -> dict[str, float | None]:
    """Label -> share of pairwise worker judgements agreeing, among pairs where one chose it.

    Each unit is one object's answers: a label per worker (single-label) or a set of labels per
    worker (multi-label). For a label L, every pair of workers on an object where at least one
    chose L is a judgement on L; it agrees when both chose L. Labels in `labels` that no pair
    judged map to None; labels outside `labels` are reported too.

    >>> per_label_agreement([["a", "a", "b"]], ["a", "b", "c"])
    {'a': 0.3333333333333333, 'b': 0.0, 'c': None}
    """
    acc = LabelAgreement()
    for unit in units:
        acc.add_unit(unit)
    names = list(labels) + sorted(set(acc.pairs) - set(labels))
    return {name: acc.value(name) for name in names}
