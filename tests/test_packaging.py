"""The Dockerfile and compose file cannot be run here (no Docker engine): check that
they say what they must, and that the config they ship is one the gateway accepts."""

from __future__ import annotations

import tomllib

import yaml

from gateway.config import load_config

from .conftest import ROOT


def dockerfile() -> dict[str, list[str]]:
    instructions: dict[str, list[str]] = {}
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            word, _, rest = line.strip().partition(" ")
            instructions.setdefault(word, []).append(rest.strip())
    return instructions


def test_dockerfile_runs_the_packaged_command_as_a_non_root_user() -> None:
    d = dockerfile()
    assert d["FROM"] == ["python:3.11-slim"]
    assert d["USER"] == ["gateway"]
    assert "/healthz" in d["HEALTHCHECK"][0]
    assert d["ENTRYPOINT"] == ['["gateway"]']
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gateway"] == "gateway.cli:main"
    assert any("pip install" in r and " ." in r for r in d["RUN"])


def test_compose_file_wires_the_services_and_a_valid_config() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"gateway", "upstream", "redis", "postgres"}
    gw = services["gateway"]
    assert gw["build"] == "." and "gateway serve" in " ".join(gw["entrypoint"])
    mount = next(v for v in gw["volumes"] if v.endswith(":/etc/gateway/gateway.toml:ro"))
    config = load_config(ROOT / mount.split(":")[0], env={})
    assert config.redis is not None and config.redis.url.startswith("redis://redis:")
    assert config.store.url.startswith("postgresql://") and "@postgres:" in config.store.url
    assert config.routes[0].upstream == "http://upstream:9000"
    assert config.server.listen.startswith("0.0.0.0:")


def test_the_example_config_is_every_documented_default() -> None:
    example = load_config(ROOT / "config" / "example.toml", env={})
    defaults = load_config(None, env={})
    assert example.server == defaults.server and example.auth == defaults.auth
    assert example.cache == defaults.cache and example.policy == defaults.policy
    assert example.events == defaults.events
    assert example.routes[0].prefix == "/api/"
