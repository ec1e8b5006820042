"""schemathesis against command-api's and query-api's OpenAPI documents.

Every operation, positive and negative cases, every built-in check: no 5xx
but the deliberate, retryable 503s, no answer outside its documented statuses,
media types, headers and schemas, valid requests accepted and invalid ones
refused (the few refusals a schema cannot foresee are listed in `harness`).
Also a run without a token, in which no route's handler runs.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from schemathesis.checks import CHECKS, CheckContext, load_all_checks

from nova_platform.http.problems import PROBLEM_JSON

from .harness import FUZZ_SETTINGS, InProcess, load

pytestmark = pytest.mark.fuzz

COMMANDS = load(InProcess("commands"))
QUERIES = load(InProcess("queries", seed=4))
COMMANDS_WITHOUT_TOKEN = load(InProcess("commands"), authenticated=False)
QUERIES_WITHOUT_TOKEN = load(InProcess("queries", seed=1), authenticated=False)


@pytest.mark.parametrize("schema", [COMMANDS, QUERIES], ids=["commands", "queries"])
def test_every_check_is_enabled(schema: schemathesis.BaseSchema) -> None:
    load_all_checks()
    config = schema.config.checks_config_for()

    disabled = [
        n for n in CHECKS.get_all_names() if not config.get_by_name(name=n).enabled
    ]

    assert disabled == []
    assert len(CHECKS.get_all_names()) >= 14


@COMMANDS.parametrize()
@FUZZ_SETTINGS
def test_command_api_answers_as_documented(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()


@QUERIES.parametrize()
@FUZZ_SETTINGS
def test_query_api_answers_as_documented(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()


# Answers that come before the token is checked: the body-size limit, the
# router (405), and FastAPI, which decodes a JSON body before it runs any
# dependency (400 or 422 for a body it cannot decode).
BEFORE_AUTHENTICATION = {400, 405, 413, 422}


def refused_without_token(
    ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool:
    """Without a token no handler runs: a 401 problem asks for one, unless the
    request failed before the token was looked at."""
    assert response.headers["content-type"] == [PROBLEM_JSON], response.text[:300]
    if response.status_code in BEFORE_AUTHENTICATION:
        return True
    assert response.status_code == 401, response.text[:300]
    assert response.headers["www-authenticate"] == ["Bearer"]
    return True


@COMMANDS_WITHOUT_TOKEN.parametrize()
@FUZZ_SETTINGS
def test_command_api_without_a_token_is_unauthorized(
    case: schemathesis.Case[Any],
) -> None:
    case.call_and_validate(additional_checks=[refused_without_token])


@QUERIES_WITHOUT_TOKEN.parametrize()
@FUZZ_SETTINGS
def test_query_api_without_a_token_is_unauthorized(
    case: schemathesis.Case[Any],
) -> None:
    case.call_and_validate(additional_checks=[refused_without_token])
