"""OCF resource agents (Debian's ``resource-agents``, ``pacemaker-resource-agents``) as haos
components: :class:`OcfAgent` runs one, :class:`OcfComponent` maps availability states onto it.
"""

from haos.services.ocf.agent import (
    AgentResult,
    OcfAction,
    OcfAgent,
    OcfAgentError,
    OcfRc,
)
from haos.services.ocf.component import OcfComponent, OcfRunner, failed_action, health, plan
from haos.services.ocf.metadata import (
    ActionSpec,
    AgentMetadata,
    MetadataError,
    ParameterSpec,
    check_params,
    parse_duration,
    parse_metadata,
)

__all__ = [
    "ActionSpec",
    "AgentMetadata",
    "AgentResult",
    "MetadataError",
    "OcfAction",
    "OcfAgent",
    "OcfAgentError",
    "OcfComponent",
    "OcfRc",
    "OcfRunner",
    "ParameterSpec",
    "check_params",
    "failed_action",
    "health",
    "parse_duration",
    "parse_metadata",
    "plan",
]
