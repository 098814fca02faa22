"""The config file and GATEWAY_* overrides: DESIGN §4 names and defaults, errors by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.errors import CATALOGUE, GatewayError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_documented_ones() -> None:
    c = load_config(env={})
    assert c.server.listen == "127.0.0.1:8080" and c.admin.listen == "127.0.0.1:9901"
    assert c.auth.clock_skew == 300 and c.auth.max_presign_expires == 3600
    assert c.auth.sigv4.service == "gateway" and c.auth.sigv4.regions == ("local",)
    assert c.cache.ttl == 60 and c.cache.serve_stale == 900
    assert c.server.max_headers == 32 * 1024
    assert c.policy.default_lifetime == 90 * 86400 and c.redis is None


def test_file_and_routes(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, """
[auth]
clock_skew = "2m"
[redis]
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:9000"
scopes = { GET = "api:read", "*" = "api:write" }
max_body = "1MiB"
"""), env={})
    assert c.auth.clock_skew == 120 and c.redis is not None and c.redis.prefix == "gw:"
    (route,) = c.routes
    assert route.max_body == 1024 * 1024 and route.scopes["*"] == "api:write"
    assert route.timeout == 30 and route.replay is None


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:1"\n')
    c = load_config(path, env={"GATEWAY_SERVER__LISTEN": "[::1]:8080",
                               "GATEWAY_AUTH__SIGV4__REGIONS": "local, eu-1",
                               "GATEWAY_LOG__ACCESS_LOG": "false",
                               "GATEWAY_KEY_ID": "not a setting: reserved for the SDK"})
    assert c.server.listen == "[::1]:8080" and c.auth.sigv4.regions == ("local", "eu-1")
    assert c.log.access_log is False


@pytest.mark.parametrize(("text", "env", "named"), [
    ("[server]\nlisten_port = 1\n", {}, "server.listen_port"),
    ("[nope]\n", {}, "nope"),
    ("[server]\nworkers = \"two\"\n", {}, "server.workers"),
    ("[auth]\nclock_skew = 300\n", {}, "auth.clock_skew"),
    ("[auth]\nreplay = \"sometimes\"\n", {}, "auth.replay"),
    ("[[routes]]\nprefix = \"api\"\nupstream = \"http://x\"\n", {}, "routes[0].prefix"),
    ("[[routes]]\nprefix = \"/a/\"\n", {}, "routes[0]"),
    ("[[routes]]\nprefix = \"/a/\"\nupstream = \"ftp://x\"\n", {}, "routes[0].upstream"),
    ("", {"GATEWAY_SERVER__LISTN": "x"}, "GATEWAY_SERVER__LISTN"),
    ("", {"GATEWAY_CACHE__TTL": "soon"}, "cache.ttl"),
    ("", {"GATEWAY_ROUTES": "x"}, "GATEWAY_ROUTES"),
    ("[server\n", {}, "not valid TOML"),
])
def test_bad_settings_are_named(tmp_path: Path, text: str, env: dict[str, str],
                                named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env=env)
    assert named in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml", env={})


def test_every_catalogue_code_renders_its_status() -> None:
    for code, status in CATALOGUE.items():
        err = GatewayError(code, "a sentence")
        assert err.status == status and err.body() == {"error": code, "message": "a sentence"}
    with pytest.raises(ValueError):
        GatewayError("made_up", "codes are added to the catalogue first")


def test_a_config_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    # found by the atheris config target (tests/fuzz/corpus/config/not-utf8)
    path = tmp_path / "gateway.toml"
    path.write_bytes(b'[server]\nlisten = "\x85"\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path, env={})
