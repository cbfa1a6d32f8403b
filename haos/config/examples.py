"""The example configurations shipped in ``haos/examples``, by name."""

from __future__ import annotations

from importlib import resources

from haos.config.loader import parse_config
from haos.config.model import ClusterConfig
from haos.config.schema import short_repr, suggest
from haos.errors import ConfigError, ConfigProblem


def builtin_examples() -> list[str]:
    """Names of the example configurations shipped in ``haos/examples``, sorted."""
    folder = resources.files("haos").joinpath("examples")
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_builtin_example(name: str) -> ClusterConfig:
    """Load the shipped example ``name`` (see :func:`builtin_examples`)."""
    source = f"builtin:{name}.toml"
    if name not in builtin_examples():
        source = f"builtin:{short_repr(name)[1:-1]}.toml"
        known = ", ".join(builtin_examples())
        reason = (
            f"no built-in example {short_repr(name)}{suggest(name, builtin_examples())}; "
            f"have: {known}"
        )
        raise ConfigError([ConfigProblem(source, "", reason)])
    resource = resources.files("haos").joinpath("examples", f"{name}.toml")
    return parse_config(resource.read_text(encoding="utf-8"), source)
