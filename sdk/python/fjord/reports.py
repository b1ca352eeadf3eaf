"""An evaluation job's report (``report.json``, ``"schema": "fjord.evaluation/1"``)
as dataclasses: one :class:`DatasetReport` (``"fjord.compare/1"``) per dataset,
in the order of the job's ``datasets``. docs/comparison.md says what each
field measures and how to read it.

Like :mod:`fjord.types` these are inert data: ``from_dict`` builds them from
the JSON (ignoring fields it does not know, keeping the whole object in
``raw``), ``to_dict()`` gives the JSON back, and a report that is not the
shape the protocol says raises :class:`fjord.InternalError` naming the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from .errors import InternalError

__all__ = [
    "EVALUATION_SCHEMA",
    "COMPARE_SCHEMA",
    "Interval",
    "CandidateResult",
    "PairResult",
    "Rank",
    "Sample",
    "WinRate",
    "JudgePair",
    "JudgeResult",
    "DatasetReport",
    "EvaluationReport",
]

#: The schema of report.json.
EVALUATION_SCHEMA = "fjord.evaluation/1"
#: The schema of each dataset's report in it (fjord-compare's).
COMPARE_SCHEMA = "fjord.compare/1"


def _fail(where: str, what: str, v: Any) -> InternalError:
    return InternalError(f"malformed evaluation report: {where} is {v!r}, not {what}")


def _obj(v: Any, where: str) -> Dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(where, "an object", v)
    return v


def _list(d: Dict[str, Any], key: str, where: str) -> List[Any]:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise _fail(f"{where}.{key}", "an array", v)
    return v


def _num(d: Dict[str, Any], key: str, where: str, default: Optional[float] = None) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(f"{where}.{key}", "a number", v)
    return float(v)


def _count(d: Dict[str, Any], key: str, where: str, default: int = 0) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(f"{where}.{key}", "an integer", v)
    return v


def _text(d: Dict[str, Any], key: str, where: str, default: Optional[str] = "") -> str:
    v = d.get(key, default)
    if not isinstance(v, str):
        raise _fail(f"{where}.{key}", "a string", v)
    return v


@dataclasses.dataclass
class Interval:
    """A 95% bootstrap interval."""

    low: float
    high: float

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Interval":
        d = _obj(d, where)
        return cls(low=_num(d, "low", where), high=_num(d, "high", where))

    def __contains__(self, x: float) -> bool:
        return self.low <= x <= self.high


@dataclasses.dataclass
class CandidateResult:
    """One candidate on one dataset: its mean ``metrics`` (``loss``,
    ``perplexity``, ``token_accuracy``, ``exact_match``,
    ``normalized_exact_match``, ``contains``, ``token_f1``: those asked for),
    each metric's interval over examples, speed (``loss_tokens_per_s``,
    ``generated_tokens_per_s``, ``generated_tokens``) and the worker's peak
    resident memory once it had run. ``adapter``: where its adapter came from
    (None for the base)."""

    name: str
    adapter: Optional[str]
    metrics: Dict[str, float]
    intervals: Dict[str, Interval]
    speed: Dict[str, float]
    peak_rss_bytes: Optional[int]

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "CandidateResult":
        d = _obj(d, where)
        metrics = _obj(d.get("metrics", {}), f"{where}.metrics")
        intervals = _obj(d.get("intervals", {}), f"{where}.intervals")
        speed = _obj(d.get("speed", {}), f"{where}.speed")
        rss = d.get("peak_rss_bytes")
        if rss is not None and (isinstance(rss, bool) or not isinstance(rss, int)):
            raise _fail(f"{where}.peak_rss_bytes", "an integer", rss)
        return cls(
            name=_text(d, "name", where, None),
            adapter=d.get("adapter") if isinstance(d.get("adapter"), str) else None,
            metrics={k: _num(metrics, k, f"{where}.metrics") for k in metrics},
            intervals={k: Interval.from_dict(v, f"{where}.intervals.{k}") for k, v in intervals.items()},
            speed={k: _num(speed, k, f"{where}.speed") for k in speed},
            peak_rss_bytes=rss,
        )


@dataclasses.dataclass
class PairResult:
    """Candidate ``a`` against ``b`` on one metric: the mean over examples of
    (a − b), its 95% interval, and the verdict for ``a``: ``better`` /
    ``worse`` only where the interval excludes zero (lower is better for
    ``loss`` and ``perplexity``), else ``tie``."""

    metric: str
    a: str
    b: str
    mean_difference: float
    low: float
    high: float
    verdict: str

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "PairResult":
        d = _obj(d, where)
        return cls(metric=_text(d, "metric", where, None), a=_text(d, "a", where, None), b=_text(d, "b", where, None),
                   mean_difference=_num(d, "mean_difference", where), low=_num(d, "low", where),
                   high=_num(d, "high", where), verdict=_text(d, "verdict", where, "tie"))


@dataclasses.dataclass
class Rank:
    """A candidate's rank on one metric: 1 + the number of candidates
    significantly better than it (candidates nothing separates share one)."""

    name: str
    rank: int
    mean: float

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Rank":
        d = _obj(d, where)
        return cls(name=_text(d, "name", where, None), rank=_count(d, "rank", where, None),  # type: ignore[arg-type]
                   mean=_num(d, "mean", where))


@dataclasses.dataclass
class Sample:
    """One prompt with its answer and every candidate's reply (``replies``:
    candidate name → reply); ``line``: its line in the dataset."""

    line: int
    prompt: str
    answer: str
    replies: Dict[str, str]

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Sample":
        d = _obj(d, where)
        replies = _obj(d.get("replies", {}), f"{where}.replies")
        return cls(line=_count(d, "line", where), prompt=_text(d, "prompt", where), answer=_text(d, "answer", where),
                   replies={k: _text(replies, k, f"{where}.replies") for k in replies})


@dataclasses.dataclass
class WinRate:
    """A win rate (ties count half) with its 95% interval."""

    mean: float
    low: float
    high: float

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "WinRate":
        d = _obj(d, where)
        return cls(mean=_num(d, "mean", where), low=_num(d, "low", where), high=_num(d, "high", where))


@dataclasses.dataclass
class JudgePair:
    """The judge model on one pair of candidates: over ``examples`` prompts,
    each asked in both orders, how often it preferred ``a``, ``b``, neither
    (``ties``) or gave no verdict it could parse; ``agreement``: the fraction
    of examples whose two orders agreed; ``win_rate_a``: ``a``'s win rate
    (ties half) with its 95% interval;
    ``verdict``: ``better`` / ``worse`` for ``a`` where that interval excludes
    one half, else ``tie``."""

    a: str
    b: str
    examples: int
    wins_a: int
    wins_b: int
    ties: int
    unparseable: int
    agreement: float
    win_rate_a: WinRate
    verdict: str

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "JudgePair":
        d = _obj(d, where)
        return cls(a=_text(d, "a", where, None), b=_text(d, "b", where, None), examples=_count(d, "examples", where),
                   wins_a=_count(d, "wins_a", where), wins_b=_count(d, "wins_b", where),
                   ties=_count(d, "ties", where), unparseable=_count(d, "unparseable", where),
                   agreement=_num(d, "agreement", where),
                   win_rate_a=WinRate.from_dict(d.get("win_rate_a"), f"{where}.win_rate_a"),
                   verdict=_text(d, "verdict", where, "tie"))


@dataclasses.dataclass
class JudgeResult:
    """The LLM judge of one dataset: its ``model``, the ``prompt`` it was given,
    and one :class:`JudgePair` per pair of candidates."""

    model: str
    prompt: str
    pairs: List[JudgePair]

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "JudgeResult":
        d = _obj(d, where)
        return cls(model=_text(d, "model", where), prompt=_text(d, "prompt", where),
                   pairs=[JudgePair.from_dict(p, f"{where}.pairs[{i}]")
                          for i, p in enumerate(_list(d, "pairs", where))])


@dataclasses.dataclass
class DatasetReport:
    """The candidates compared on one dataset (a ``fjord.compare/1`` report).

    ``data``: the dataset (its file); ``examples``: how many prompts;
    ``ranking``: metric → the candidates' ranks; ``judge``: None unless the job
    asked for one.
    """

    data: str
    examples: int
    candidates: List[CandidateResult]
    pairs: List[PairResult]
    ranking: Dict[str, List[Rank]]
    samples: List[Sample]
    judge: Optional[JudgeResult] = None
    model: str = ""
    chat_template: str = ""
    bootstrap: Dict[str, Any] = dataclasses.field(default_factory=dict)
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Any, where: str = "report") -> "DatasetReport":
        d = _obj(d, where)
        schema = d.get("schema", COMPARE_SCHEMA)
        if schema != COMPARE_SCHEMA:
            raise InternalError(f"malformed evaluation report: {where}.schema is {schema!r}, not '{COMPARE_SCHEMA}'")
        ranking = _obj(d.get("ranking", {}), f"{where}.ranking")
        judge = d.get("judge")
        return cls(
            data=_text(d, "data", where),
            examples=_count(d, "examples", where),
            candidates=[CandidateResult.from_dict(c, f"{where}.candidates[{i}]")
                        for i, c in enumerate(_list(d, "candidates", where))],
            pairs=[PairResult.from_dict(p, f"{where}.pairs[{i}]") for i, p in enumerate(_list(d, "pairs", where))],
            ranking={m: [Rank.from_dict(r, f"{where}.ranking.{m}[{i}]")
                         for i, r in enumerate(_list(ranking, m, f"{where}.ranking"))] for m in ranking},
            samples=[Sample.from_dict(s, f"{where}.samples[{i}]") for i, s in enumerate(_list(d, "samples", where))],
            judge=JudgeResult.from_dict(judge, f"{where}.judge") if judge is not None else None,
            model=_text(d, "model", where),
            chat_template=_text(d, "chat_template", where),
            bootstrap=_obj(d.get("bootstrap", {}), f"{where}.bootstrap"),
            raw=d,
        )

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.raw)

    def candidate(self, name: str) -> CandidateResult:
        """The candidate called ``name`` (KeyError if none)."""
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(name)

    def pair(self, a: str, b: str, metric: str) -> Optional[PairResult]:
        """The comparison of ``a`` against ``b`` on ``metric`` as the report
        states it (None when it states it as ``b`` against ``a``, or not at all)."""
        for p in self.pairs:
            if (p.a, p.b, p.metric) == (a, b, metric):
                return p
        return None


@dataclasses.dataclass
class EvaluationReport:
    """An evaluation job's report: the ``job``, the base ``model``, and one
    :class:`DatasetReport` per dataset, in the order of the job's datasets."""

    job: str
    model: str
    datasets: List[DatasetReport]
    schema: str = EVALUATION_SCHEMA
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Any) -> "EvaluationReport":
        """InternalError naming the field for a report that is not
        ``fjord.evaluation/1``."""
        d = _obj(d, "report")
        if d.get("schema") != EVALUATION_SCHEMA:
            raise InternalError(f"malformed evaluation report: schema is {d.get('schema')!r}, "
                                f"not '{EVALUATION_SCHEMA}'")
        return cls(job=_text(d, "job", "report"), model=_text(d, "model", "report"),
                   datasets=[DatasetReport.from_dict(x, f"datasets[{i}]")
                             for i, x in enumerate(_list(d, "datasets", "report"))],
                   schema=EVALUATION_SCHEMA, raw=d)

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.raw)
