"""schemathesis' stateful testing over command-api and query-api together.

The merged document links each command to the commands that may follow it on
the same audio, at the version it answered (command-api's own OpenAPI links),
and to the queries of that audio at that version (the harness adds those, as
the two APIs are separate documents). So scenarios run create -> transcribe ->
result -> read in sequence, with every check after every step; webhook
subscriptions and user erasure get scenarios of their own.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.python import asgi

from .harness import STATEFUL_SETTINGS, InProcess, load, token

pytestmark = pytest.mark.fuzz

Step = tuple[str, int]


def workflow(path_regex: str) -> Any:
    """A state machine over the operations whose path matches `path_regex`,
    recording every scenario's steps as (operation, status)."""
    schema = load(InProcess("commands", "queries")).include(path_regex=path_regex)
    # Scenarios of valid requests: invalid ones are fuzzed per operation
    # (test_rest_schemas), and with a small budget they crowd out the chains.
    schema.config.generation.update(modes=[GenerationMode.POSITIVE])

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        scenarios: list[list[Step]] = []

        def setup(self) -> None:
            # A fresh app on fresh backends for each scenario (the next call
            # starts its lifespan), so Hypothesis can replay one exactly.
            asgi.shutdown_lifespans()
            self.scenarios.append([])

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {token()}"}}

        def after_call(self, response: schemathesis.Response, case: Any) -> None:
            super().after_call(response, case)
            self.scenarios[-1].append((case.operation.label, response.status_code))

    return Workflow


def ran_in_order(wanted: list[Step], scenario: list[Step]) -> bool:
    steps = iter(scenario)
    return all(step in steps for step in wanted)


def assert_some_scenario_ran(machine: Any, chain: list[Step]) -> None:
    assert any(ran_in_order(chain, s) for s in machine.scenarios), (
        f"no scenario ran {chain}; the longest: {max(machine.scenarios, key=len)}"
    )


def test_audio_scenarios_go_from_commands_to_queries() -> None:
    machine = workflow("^/(commands|queries)/audio")

    machine.run(settings=STATEFUL_SETTINGS)

    assert_some_scenario_ran(
        machine,
        [
            ("POST /commands/audio", 201),
            ("POST /commands/audio/{audio_id}/transcribe", 202),
            ("GET /queries/audio/{audio_id}", 200),
        ],
    )


def test_webhook_scenarios_create_read_and_delete_subscriptions() -> None:
    machine = workflow("^/commands/webhooks")

    machine.run(settings=STATEFUL_SETTINGS)

    assert_some_scenario_ran(
        machine,
        [
            ("POST /commands/webhooks", 201),
            ("GET /commands/webhooks/{subscription_id}", 200),
        ],
    )


def test_scenarios_with_erasure_break_no_check() -> None:
    machine = workflow("^/(commands|queries)/(audio|users)")

    machine.run(settings=STATEFUL_SETTINGS)

    assert any(("DELETE /commands/users/me", 200) in s for s in machine.scenarios)
