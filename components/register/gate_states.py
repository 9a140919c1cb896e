"""The promotion gate's state machine: a version's gate states, the transitions between them, and
the MLflow tags and `champion` alias that hold them.

A version's state is read from its tags: `gate_decision` (absent: registered, never gated) and
`rolled_back=true` (over the decision it had). Every change goes through `transition`: it refuses
what `TRANSITIONS` does not allow from the version's state, writes the transition's detail tags,
moves the alias if the transition does, and writes the state last. A process killed in between
leaves the state the version had, and the next gate carries on from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Mapping

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from litops.core.faults import crash_point

CHAMPION_ALIAS = "champion"
HISTORY_TAG = "champion_history"  # on the registered model: JSON list of versions, current champion last
HISTORY_MAX = 100
DECISION_TAG = "gate_decision"
ROLLED_BACK_TAG = "rolled_back"
REASON_TAG = "gate_reason"
CHAMPION_VERSION_TAG = "gate_champion_version"  # the champion a recorded decision was made against
TIME_TAG = "gate_time"
REPORT_TAG = "gate_report"
METRIC_TAG_PREFIX = "metric."


class RegistryError(ValueError):
    """A registry request cannot be satisfied (unknown version, nothing to roll back, ...)."""


class TransitionRefused(RegistryError):
    """The version's gate state does not allow the transition asked for."""


class GateState(str, Enum):
    REGISTERED = "registered"  # never gated: no decision tag
    PROMOTING = "promoting"  # the gate chose to promote; the alias has not moved yet
    PROMOTED = "promoted"  # the gate promoted it and moved the alias
    REJECTED = "rejected"
    MANUAL = "manual"  # a person made it the champion
    ROLLED_BACK = "rolled_back"  # was the champion until a rollback moved the alias past it


def is_decided(state: GateState) -> bool:
    """Decided: the flow treats the version as up to date. A registered or promoting version is not:
    a killed run left it so, and the next run resumes its gate."""
    return state not in (GateState.REGISTERED, GateState.PROMOTING)


class Event(str, Enum):
    RECORD_PROMOTION = "record_promotion"
    MOVE_ALIAS = "move_alias"
    REJECT = "reject"
    PROMOTE_MANUALLY = "promote_manually"
    ROLL_BACK = "roll_back"
    REOPEN = "reopen"  # a forced gate decides again on a decided version


class AliasMove(Enum):
    NONE = "none"
    TO_VERSION = "to the version"
    BACK = "back to the previous champion"


@dataclass(frozen=True)
class Transition:
    sources: frozenset[GateState]
    target: GateState
    alias: AliasMove
    fault_point: str  # LITOPS_CRASH_AT=<fault_point> kills the process after the check, before any write


_UNDECIDED = frozenset(s for s in GateState if not is_decided(s))
_DECIDED = frozenset(s for s in GateState if is_decided(s))

TRANSITIONS: dict[Event, Transition] = {
    Event.RECORD_PROMOTION: Transition(_UNDECIDED, GateState.PROMOTING, AliasMove.NONE, "before_record_promotion"),
    Event.MOVE_ALIAS: Transition(frozenset({GateState.PROMOTING}), GateState.PROMOTED, AliasMove.TO_VERSION,
                                 "before_alias"),
    Event.REJECT: Transition(_UNDECIDED, GateState.REJECTED, AliasMove.NONE, "before_reject"),
    Event.PROMOTE_MANUALLY: Transition(frozenset(GateState), GateState.MANUAL, AliasMove.TO_VERSION,
                                       "before_promote_manually"),
    Event.ROLL_BACK: Transition(frozenset({GateState.PROMOTED, GateState.MANUAL}), GateState.ROLLED_BACK,
                                AliasMove.BACK, "before_roll_back"),
    Event.REOPEN: Transition(_DECIDED, GateState.REGISTERED, AliasMove.NONE, "before_reopen"),
}


def state_of(mv: ModelVersion) -> GateState:
    tags = mv.tags or {}
    if tags.get(ROLLED_BACK_TAG) == "true":
        return GateState.ROLLED_BACK
    value = tags.get(DECISION_TAG)
    if not value:
        return GateState.REGISTERED
    try:
        return GateState(value)
    except ValueError:
        known = ", ".join(s.value for s in GateState)
        raise RegistryError(f"version {mv.version} of '{mv.name}' has an unknown {DECISION_TAG} tag {value!r} "
                            f"(known: {known})") from None


def transition(client: MlflowClient, model_name: str, version: int | str, event: Event,
               details: Mapping[str, str] | None = None) -> GateState:
    """Move `version` along `event` and return its new state; `details` are tags written before the state."""
    rule = TRANSITIONS[event]
    v = str(version)
    mv = client.get_model_version(model_name, v)
    before = state_of(mv)
    if before not in rule.sources:
        allowed = ", ".join(s.value for s in GateState if s in rule.sources)
        raise TransitionRefused(f"version {v} of '{model_name}' is {before.value}: {event.value} is allowed "
                                f"only from {allowed}")
    crash_point(rule.fault_point)
    for key, value in (details or {}).items():
        client.set_model_version_tag(model_name, v, key, value)
    if rule.alias is AliasMove.TO_VERSION:
        _make_champion(client, model_name, int(v))
    elif rule.alias is AliasMove.BACK:
        _move_champion_back(client, model_name, int(v))
    _write_state(client, model_name, v, mv.tags or {}, rule.target)
    return rule.target


def _write_state(client: MlflowClient, model_name: str, v: str, tags: Mapping[str, str], state: GateState) -> None:
    if state is GateState.ROLLED_BACK:  # over the decision tag, which keeps what the version was
        client.set_model_version_tag(model_name, v, ROLLED_BACK_TAG, "true")
        return
    if ROLLED_BACK_TAG in tags:
        client.delete_model_version_tag(model_name, v, ROLLED_BACK_TAG)
    if state is not GateState.REGISTERED:
        client.set_model_version_tag(model_name, v, DECISION_TAG, state.value)
    elif DECISION_TAG in tags:
        client.delete_model_version_tag(model_name, v, DECISION_TAG)


# ---------------------------------------------------------------- the champion alias and its history


def not_found(e: MlflowException) -> bool:
    return e.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def champion_version(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The version the `champion` alias points at, or None (also when the model does not exist)."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as e:
        if not_found(e):
            return None
        raise


def champion_history(client: MlflowClient, model_name: str) -> list[int]:
    raw = client.get_registered_model(model_name).tags.get(HISTORY_TAG, "[]")
    try:
        return [int(v) for v in json.loads(raw)]
    except (ValueError, TypeError):
        return []


def _save_history(client: MlflowClient, model_name: str, history: list[int]) -> None:
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history[-HISTORY_MAX:]))


def _make_champion(client: MlflowClient, model_name: str, version: int) -> None:
    """Move the alias to `version` and push it onto the history."""
    history = champion_history(client, model_name)
    current = champion_version(client, model_name)
    if current is not None and (not history or history[-1] != int(current.version)):
        history.append(int(current.version))  # alias set outside litops: remember it anyway
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, str(version))
    if not history or history[-1] != version:
        history.append(version)
    _save_history(client, model_name, history)


def _move_champion_back(client: MlflowClient, model_name: str, version: int) -> None:
    """Move the alias from `version` (the champion) to the newest earlier champion that still exists."""
    current = champion_version(client, model_name)
    if current is None or int(current.version) != version:
        raise TransitionRefused(f"version {version} of '{model_name}' is not the champion; only the champion "
                                f"can be rolled back")
    history = champion_history(client, model_name)
    while history and history[-1] == version:
        history.pop()
    while history and not _exists(client, model_name, history[-1]):  # deleted since: skip it
        history.pop()
    if not history:
        raise RegistryError(f"model '{model_name}': no previous champion in the history to roll back to "
                            f"(champion is v{version})")
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, str(history[-1]))
    _save_history(client, model_name, history)


def _exists(client: MlflowClient, model_name: str, version: int) -> bool:
    try:
        client.get_model_version(model_name, str(version))
        return True
    except MlflowException as e:
        if not_found(e):
            return False
        raise
