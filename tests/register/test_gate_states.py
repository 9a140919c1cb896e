"""The gate's state machine walked edge by edge on a real SQLite MLflow store: every event from every
state, allowed ones landing where the table says (tags, alias, history), refused ones changing nothing."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from litops.register.cli import lookup
from litops.register.gate_states import (CHAMPION_ALIAS, DECISION_TAG, HISTORY_TAG, REASON_TAG, ROLLED_BACK_TAG,
                                         TRANSITIONS, AliasMove, Event, GateState, TransitionRefused,
                                         champion_version, is_decided, state_of, transition)
from litops.register.registry import ensure_registered_model

# How each state is reached from a fresh version, once an earlier version is the champion.
PATHS = {
    GateState.REGISTERED: [],
    GateState.PROMOTING: [Event.RECORD_PROMOTION],
    GateState.PROMOTED: [Event.RECORD_PROMOTION, Event.MOVE_ALIAS],
    GateState.REJECTED: [Event.REJECT],
    GateState.MANUAL: [Event.PROMOTE_MANUALLY],
    GateState.ROLLED_BACK: [Event.PROMOTE_MANUALLY, Event.ROLL_BACK],
}
DECIDED = {GateState.PROMOTED, GateState.REJECTED, GateState.MANUAL, GateState.ROLLED_BACK}  # as README documents
LINEAGE = {"data_version": "feed.dir", "config_hash": "c0ffee"}
_names = itertools.count()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('gate-states') / 'mlflow.db'}"
    return MlflowClient(uri, registry_uri=uri)


def version_in(client: MlflowClient, state: GateState) -> tuple[str, int, int]:
    """A new model whose earlier version is the champion, and a later version brought to `state`."""
    name = f"walk-{next(_names)}"
    ensure_registered_model(client, name)
    earlier, version = (int(client.create_model_version(name, source="/tmp", tags=LINEAGE).version)
                        for _ in range(2))
    transition(client, name, earlier, Event.PROMOTE_MANUALLY)
    for event in PATHS[state]:
        transition(client, name, version, event)
    assert state_of(client.get_model_version(name, str(version))) is state
    return name, earlier, version


def snapshot(client: MlflowClient, name: str, version: int) -> tuple[dict, int | None, list[int]]:
    holder = champion_version(client, name)
    return (client.get_model_version(name, str(version)).tags, int(holder.version) if holder else None,
            json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]")))


def test_the_table_covers_every_event_and_every_state_is_reachable():
    assert set(TRANSITIONS) == set(Event)
    assert set(PATHS) == set(GateState)
    targets = {rule.target for rule in TRANSITIONS.values()} | {GateState.REGISTERED}
    assert targets == set(GateState)
    assert TRANSITIONS[Event.MOVE_ALIAS].fault_point == "before_alias"  # what the crash tests arm


@pytest.mark.parametrize("state", list(GateState), ids=lambda s: s.value)
def test_decided_is_as_documented_and_lookup_reports_it(client, state):
    assert is_decided(state) is (state in DECIDED)
    name, _, version = version_in(client, state)
    found = lookup(client, name, LINEAGE["data_version"], LINEAGE["config_hash"])
    assert (found["version"], found["state"], found["decided"]) == (version, state.value, state in DECIDED)


def test_lookup_gives_no_champion_to_gate_against_when_the_version_holds_the_alias(client):
    name, earlier, version = version_in(client, GateState.PROMOTING)
    assert lookup(client, name, **LINEAGE)["champion_version"] == earlier
    client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))  # a gate killed after the alias moved
    found = lookup(client, name, **LINEAGE)
    assert (found["state"], found["decided"], found["champion_version"], found["champion_uri"]) == (
        "promoting", False, None, None)


EDGES = [(event, state) for event in Event for state in GateState]


@pytest.mark.parametrize("event,state", EDGES, ids=[f"{e.value}-from-{s.value}" for e, s in EDGES])
def test_every_event_from_every_state(client, event, state):
    rule = TRANSITIONS[event]
    name, earlier, version = version_in(client, state)
    tags_before, holder_before, history_before = snapshot(client, name, version)
    details = {REASON_TAG: f"walked {event.value}"}

    if state not in rule.sources:
        with pytest.raises(TransitionRefused, match=f"version {version} of '{name}' is {state.value}: "
                                                    f"{event.value} is allowed only from "):
            transition(client, name, version, event, details)
        assert snapshot(client, name, version) == (tags_before, holder_before, history_before)
        return

    assert transition(client, name, version, event, details) is rule.target
    tags, holder, history = snapshot(client, name, version)
    assert state_of(client.get_model_version(name, str(version))) is rule.target
    assert tags[REASON_TAG] == details[REASON_TAG]
    if rule.target is GateState.ROLLED_BACK:
        assert tags[ROLLED_BACK_TAG] == "true" and tags[DECISION_TAG] == tags_before[DECISION_TAG]
    else:
        assert ROLLED_BACK_TAG not in tags
        assert tags.get(DECISION_TAG) == (None if rule.target is GateState.REGISTERED else rule.target.value)
    if rule.alias is AliasMove.TO_VERSION:
        assert holder == version and history[-1] == version
    elif rule.alias is AliasMove.BACK:
        assert holder == earlier and history == [earlier]
    else:
        assert (holder, history) == (holder_before, history_before)


def test_roll_back_refuses_a_version_that_is_not_the_champion(client):
    name, earlier, version = version_in(client, GateState.PROMOTED)
    transition(client, name, earlier, Event.PROMOTE_MANUALLY)
    with pytest.raises(TransitionRefused, match=f"version {version} of '{name}' is not the champion"):
        transition(client, name, version, Event.ROLL_BACK)
    assert state_of(client.get_model_version(name, str(version))) is GateState.PROMOTED


def test_the_readme_diagram_is_the_table():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    diagram = readme.split("```mermaid\nstateDiagram-v2\n", 1)[1].split("```", 1)[0]
    drawn = set()
    for line in diagram.strip().splitlines():
        edge, label = line.split(":", 1)
        source, target = (side.strip() for side in edge.split("-->"))
        if source != "[*]":
            drawn.add((source, target, label.split()[0]))
    table = {(state.value, rule.target.value, event.value)
             for event, rule in TRANSITIONS.items() for state in rule.sources}
    assert drawn == table


def test_every_transition_has_a_crash_point_a_test_can_arm():
    from litops.core.faults import GATE_CRASH_POINTS

    assert sorted(rule.fault_point for rule in TRANSITIONS.values()) == sorted(GATE_CRASH_POINTS)
