"""Which settings class reads each deployed process's environment.

The compose and Kubernetes tests check every variable they set against these
classes, so a setting that is renamed, removed or mistyped fails there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import pytest

from nova_command_api.settings import CommandApiSettings
from nova_integration.settings import IntegrationSettings
from nova_platform.settings import NovaSettings
from nova_projector_readmodel.entrypoints.consumer import (
    ProjectorSettings as ReadModelSettings,
)
from nova_projector_search.entrypoints.consumer import (
    ProjectorSettings as SearchSettings,
)
from nova_query_api.settings import QueryApiSettings
from nova_transcriber.settings import TranscriberSettings

INIT = "nova-init"
SETTINGS_OF: dict[str, type[NovaSettings]] = {
    "command-api": CommandApiSettings,
    "relay": CommandApiSettings,
    "projector-readmodel": ReadModelSettings,
    "projector-search": SearchSettings,
    "integration": IntegrationSettings,
    "query-api": QueryApiSettings,
    "transcriber": TranscriberSettings,
    INIT: NovaSettings,
}
# Read by the AWS SDK, not by Nova's settings.
AWS_VARIABLES = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
)
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def env_name(settings: type[NovaSettings], field: str) -> str:
    prefix = settings.model_config.get("env_prefix", "")
    return f"{prefix}{field}".upper()


def setting_names(settings: type[NovaSettings]) -> set[str]:
    return {env_name(settings, field) for field in settings.model_fields}


def unread_variables(settings: type[NovaSettings], env: Mapping[str, str]) -> set[str]:
    """The variables of `env` that neither the settings nor the AWS SDK read."""
    readable = setting_names(settings) | AWS_VARIABLES
    return {key for key in env if key not in readable and not key.startswith("OTEL_")}


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` with NAME unset: the default."""
    return _DEFAULTED.sub(lambda m: m.group(2), value)


def load(
    settings: type[NovaSettings],
    env: Mapping[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> NovaSettings:
    """The settings as the process would load them from exactly `env`."""
    with monkeypatch.context() as patch:
        for key in list(os.environ):
            if key.startswith("NOVA_"):
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return settings()
