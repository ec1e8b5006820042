"""The harness' hooks for the schemathesis CLI, as `SCHEMATHESIS_HOOKS` names them.

With `SCHEMATHESIS_HOOKS=tests.fuzz.cli_hooks` (run from the repository root).
The in-process tests register them on each schema (`harness.load`); a CLI run
against running services needs them global, and only there.
"""

from __future__ import annotations

import schemathesis

from .harness import foreseen, realistic

schemathesis.hook("map_case")(realistic)
schemathesis.hook("filter_failure")(foreseen)
