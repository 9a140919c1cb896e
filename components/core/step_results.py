"""What a component's step hands back to the flow: one small dataclass per kind of result.

On the wire a result is the component's last stdout line, `LITOPS_RESULT {json}`: the dataclass's
fields plus `kind` (which dataclass) and `schema` (that kind's schema version). The flow parses the
line back into the same dataclass and refuses, in one line, a kind or schema it does not know (a
component image older or newer than the flow). A field holding a dict is a mapping whose keys are
data (metric names, split names, reasons), not a fixed shape.

Standard library only: components and flows both import it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, TypeVar

RESULT_PREFIX = "LITOPS_RESULT "

R = TypeVar("R", bound="StepResult")


class UnreadableRecord(ValueError):
    """A LITOPS_RESULT or LITOPS_ERROR line this side cannot read: unknown kind or schema, wrong fields, bad JSON."""


class StepResult:
    """Base of every result dataclass: its kind, its schema version and the line it travels as."""

    KIND: ClassVar[str]
    SCHEMA: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.KIND, "schema": self.SCHEMA, **dataclasses.asdict(self)}

    def to_line(self) -> str:
        return RESULT_PREFIX + json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_fields(cls: type[R], values: Mapping[str, Any]) -> R:
        """The result from exactly its fields; UnreadableRecord naming any missing or unknown one."""
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        required = {f.name for f in fields if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        unknown, missing = sorted(values.keys() - names), sorted(required - values.keys())
        if unknown or missing:
            what = "; ".join(filter(None, [unknown and f"unknown fields {unknown}", missing and f"missing fields {missing}"]))
            raise UnreadableRecord(f"a '{cls.KIND}' result (schema {cls.SCHEMA}) with {what}")
        return cls(**values)


# ---------------------------------------------------------------- data component


@dataclass(frozen=True)
class DataVersionResult(StepResult):
    """`data synth | add | version | pull`: the dataset and the data version it is at."""

    KIND: ClassVar[str] = "data-version"
    command: str  # synth | add | version | pull
    name: str
    data_version: str  # '<md5>.dir'
    dataset_dir: str
    git_sha: str  # the data repo's commit
    splits: dict[str, Any]  # split name -> samples
    committed: bool | None  # a new commit; None for a pull, which commits nothing
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)  # what the command adds: ingest counts by reason, ...


@dataclass(frozen=True)
class CheckoutResult(StepResult):
    """`data checkout`: a data version restored into its own folder."""

    KIND: ClassVar[str] = "data-checkout"
    name: str
    ref: str  # as asked: '<md5>.dir', MODEL@ALIAS or MODEL/N
    data_version: str
    dataset_dir: str
    splits: dict[str, Any]
    fetched: int
    verified_shards: int  # S3 objects of an in-place version checked against the manifest
    seconds: float
    model: str | None = None  # for a model reference: whose data it is
    model_version: int | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class IndexResult(StepResult):
    """`data index`: the manifest and offset indexes written beside shards in place."""

    KIND: ClassVar[str] = "data-index"
    source: str
    manifest: str
    digest: str
    splits: dict[str, Any]  # split name -> {shards, samples, bytes}
    indexed: int
    reused: int
    written: bool
    seconds: float


# ---------------------------------------------------------------- train, evaluate


@dataclass(frozen=True)
class TrainResult(StepResult):
    KIND: ClassVar[str] = "train"
    model_path: str
    steps: int
    resumed_from: int | None
    final_loss: float
    samples_per_s: float
    run_id: str | None  # None: trained without MLflow tracking
    config_hash: str


@dataclass(frozen=True)
class EvaluateResult(StepResult):
    KIND: ClassVar[str] = "evaluate"
    metrics: dict[str, dict[str, float]]  # model label -> metric name -> value
    models: dict[str, str]  # model label -> the file or URI evaluated
    splits: dict[str, Any]  # built-in benchmark split -> counts
    suites: dict[str, Any]  # suite name -> {kind, counts}
    plots: list[str]
    artifacts: list[str]  # the plots as logged to the run
    logged_model: str | None  # the label logged to run_id
    run_id: str | None
    skipped: list[str]  # notes: what was not evaluated, and why
    seconds: float


# ---------------------------------------------------------------- register component


@dataclass(frozen=True)
class GateMetricsResult(StepResult):
    """The metrics the gate decides on for a dataset and its suites, settled before training."""

    KIND: ClassVar[str] = "gate-metrics"
    primary: str
    guards: list[str]
    reported: list[str]  # every metric the evaluation will report


@dataclass(frozen=True)
class LookupResult(StepResult):
    """The version trained on a data version + config hash (None: none yet), its gate state, and the
    champion it is gated against (None when it already holds the alias: a killed gate moved it)."""

    KIND: ClassVar[str] = "lookup"
    version: int | None
    model_uri: str | None
    state: str | None  # litops.register.gate_states.GateState's value
    decided: bool | None  # the gate decided on `version`
    train_run_id: str | None
    champion_version: int | None
    champion_uri: str | None


@dataclass(frozen=True)
class RegisterResult(StepResult):
    KIND: ClassVar[str] = "register"
    version: int
    created: bool  # False: the run's version existed already
    model_uri: str
    model_id: str | None
    run_id: str | None
    log_seconds: float | None = None  # timings of a version created now
    total_seconds: float | None = None


@dataclass(frozen=True)
class GateDecision(StepResult):
    KIND: ClassVar[str] = "gate"
    promoted: bool
    reason: str
    markdown: str  # the gate's report
    version: int
    champion_version: int | None  # the champion after the decision
    already_decided: bool = False  # a retried gate: the recorded decision
    resumed: bool = False  # a recorded promotion finished now


@dataclass(frozen=True)
class ChampionResult(StepResult):
    KIND: ClassVar[str] = "champion"
    version: int | None
    model_uri: str | None


@dataclass(frozen=True)
class PromoteResult(StepResult):
    KIND: ClassVar[str] = "promote"
    version: int
    previous_champion: int | None
    model_uri: str


@dataclass(frozen=True)
class RollbackResult(StepResult):
    KIND: ClassVar[str] = "rollback"
    version: int  # the champion again
    rolled_back_from: int
    model_uri: str
    data_version: str
    run_id: str | None
    metrics: dict[str, float]  # of `version`, as recorded when it was gated
    rolled_back_metrics: dict[str, float]  # of `rolled_back_from`


@dataclass(frozen=True)
class ModelsResult(StepResult):
    KIND: ClassVar[str] = "models"
    model_name: str
    rows: list[dict[str, Any]]  # one per version, newest first, as `litops models --format json` prints them


RESULT_KINDS: dict[str, type[StepResult]] = {cls.KIND: cls for cls in (
    DataVersionResult, CheckoutResult, IndexResult, TrainResult, EvaluateResult, GateMetricsResult, LookupResult,
    RegisterResult, GateDecision, ChampionResult, PromoteResult, RollbackResult, ModelsResult)}


def from_json(payload: Any) -> StepResult:
    """The result a decoded LITOPS_RESULT payload holds; UnreadableRecord for an unknown kind or schema."""
    if not isinstance(payload, dict):
        raise UnreadableRecord(f"a LITOPS_RESULT must hold a JSON object, not {type(payload).__name__}")
    values = dict(payload)
    kind, schema = values.pop("kind", None), values.pop("schema", None)
    cls = RESULT_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnreadableRecord(f"unknown result kind {kind!r} (this side reads: {', '.join(sorted(RESULT_KINDS))})")
    if schema != cls.SCHEMA:
        raise UnreadableRecord(f"a '{kind}' result of schema {schema!r}: this side reads schema {cls.SCHEMA} "
                               "(is the component's image older or newer than the flow?)")
    return cls.from_fields(values)


def decode_line(line: str, prefix: str) -> Any:
    """The JSON payload of a `<prefix>{json}` line (a result or an error record); UnreadableRecord otherwise."""
    line = line.strip()
    if not line.startswith(prefix):
        raise UnreadableRecord(f"not a {prefix.strip()} line: {line[:80]!r}")
    try:
        return json.loads(line[len(prefix):])
    except ValueError as e:
        raise UnreadableRecord(f"a {prefix.strip()} line that is not JSON ({e})") from None


def parse_line(line: str) -> StepResult:
    """The result of one `LITOPS_RESULT {json}` line."""
    return from_json(decode_line(line, RESULT_PREFIX))


def parse_result(lines: list[str]) -> StepResult | None:
    """The result among a component's output lines (the last one wins); None when there is none."""
    for line in reversed(lines):
        if line.strip().startswith(RESULT_PREFIX):
            return parse_line(line)
    return None


def expect(result: StepResult | None, cls: type[R]) -> R:
    """`result` as the kind a step asked for; UnreadableRecord when it is missing or another kind."""
    if not isinstance(result, cls):
        got = "no result" if result is None else f"a '{result.KIND}' result"
        raise UnreadableRecord(f"expected a '{cls.KIND}' result, got {got}")
    return result
