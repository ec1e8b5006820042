"""The harness' hooks for the schemathesis CLI, as `SCHEMATHESIS_HOOKS` names them.

With `SCHEMATHESIS_HOOKS=tests.fuzz.cli_hooks` (run from the repository root).
The in-process tests register them on each schema (`harness.load`); a CLI run
against running services needs them global, and only there.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from .harness import foreseen, realistic


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case[Any]) -> Any:
    return realistic(context, case)


schemathesis.hook("filter_failure")(foreseen)
