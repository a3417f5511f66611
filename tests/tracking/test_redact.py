"""The one redaction point: text, configs, log records, Hydra's files and a child's argv."""

from __future__ import annotations

import io
import logging
import logging.config
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.orchestrate import tracking_settings
from resomap.redact import redact_config, redact_text, redact_uri
from resomap.redact_logs import install_log_redaction
from resomap.run import distributed
from resomap.run.identity import RunIdentity
from resomap.secret_names import MASK, is_secret_env_name, is_secret_key
from resomap.secret_overrides import overrides_without_secrets
from resomap.tracking.hydra_redact import redact_yaml_file
from resomap.tracking.mlflow import use_env_credentials

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "PASSWORD1234"
URI = f"http://alice:{PASSWORD}@127.0.0.1:5000"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("text", "expected"), [
    (f"logger.mlflow.tracking_uri={URI}/api?x=1", "logger.mlflow.tracking_uri=http://***@127.0.0.1:5000/api?x=1"),
    ("https://TOKEN123@github.com/a/b.git", "https://***@github.com/a/b.git"),
    ("https://h/b.mlflow?token=xyz&page=2&X-Amz-Signature=abc&access_token=q",
     "https://h/b.mlflow?token=***&page=2&X-Amz-Signature=***&access_token=***"),
    ("+logger.dagshub.api_token='two words' model=tiny_cnn", "+logger.dagshub.api_token=*** model=tiny_cnn"),
    ("DB_PASSWORD=hunter22 next", "DB_PASSWORD=*** next"),
    # As Hydra records overrides (hydra.overrides.task, overrides.yaml): ':' and ' ' escaped.
    (r"logger.mlflow.tracking_uri=http\://alice\:PASSWORD1234@127.0.0.1\:5000",
     r"logger.mlflow.tracking_uri=http\://***@127.0.0.1\:5000"),
    (r"+x.api_token=two\ words y=1", "+x.api_token=*** y=1"),
    ("Authorization: Basic YWxpY2U6c2VjcmV0cw==", "Authorization: Basic ***"),
    ("header Bearer abcdefgh12345", "header Bearer ***"),
])
def test_redact_text_masks_each_kind_of_secret(text: str, expected: str):
    assert redact_text(text) == expected


@pytest.mark.parametrize("text", [
    "sqlite:////tmp/project/mlflow.db", "http://127.0.0.1:5000/#/experiments/1", "mail a@b.com",
    "max_tokens=5 tokenizer=bert exclude_keys=[]", "export DAGSHUB_TOKEN=<token from settings>",
    "logger.mlflow.tracking_uri=${oc.env:RESOMAP_SECRET_URI}", "Basic statistics of 12 runs",
])
def test_redact_text_leaves_what_is_not_a_secret(text: str):
    assert redact_text(text) == text


def test_values_of_secret_environment_variables_are_masked_anywhere(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DAGSHUB_TOKEN", "tok-abcdef123")
    monkeypatch.setenv("MY_SERVICE_APIKEY", "k3y-value-42")
    monkeypatch.setenv("SHORT_TOKEN", "abc12")  # under 6 characters: too common to mask
    monkeypatch.setenv("HOME_DIR_NAME", "tok-abcdef123-not-secret-name")
    text = "sent tok-abcdef123 and k3y-value-42 and abc12"
    assert redact_text(text) == f"sent {MASK} and {MASK} and abc12"


def test_redact_uri_masks_user_info_and_token_queries_only():
    assert redact_uri(URI) == "http://***@127.0.0.1:5000"
    assert redact_uri("https://h:8443/x?sig=abc&b=1") == "https://h:8443/x?sig=***&b=1"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_redact_config_is_a_redacted_deep_copy(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-abcdef123")
    config = {"logger": {"mlflow": {"tracking_uri": URI, "password": "pw-1", "api_token": None,
                                    "headers": ["Bearer tok-abcdef123", 3]}},
              "callbacks": {"exclude_keys": ["a"], "apiKey": 12345, "max_epochs": 2},
              "note": "token tok-abcdef123 used"}
    redacted = redact_config(config)
    assert redacted == {"logger": {"mlflow": {"tracking_uri": "http://***@127.0.0.1:5000", "password": MASK,
                                              "api_token": None, "headers": [f"Bearer {MASK}", 3]}},
                        "callbacks": {"exclude_keys": ["a"], "apiKey": MASK, "max_epochs": 2},
                        "note": f"token {MASK} used"}
    assert config["logger"]["mlflow"]["tracking_uri"] == URI  # the input is left as it was
    assert redact_config(OmegaConf.create({"uri": URI, "ref": "${uri}"})) == {
        "uri": "http://***@127.0.0.1:5000", "ref": "http://***@127.0.0.1:5000"}


@pytest.fixture
def restored_logging() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def test_log_records_are_redacted_even_after_logging_is_reconfigured(restored_logging, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    install_log_redaction()
    install_log_redaction()  # idempotent: one wrapper
    stream = io.StringIO()
    # What Hydra does when each job starts: new handlers, set up by dictConfig.
    logging.config.dictConfig({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"stream": {"class": "logging.StreamHandler", "stream": stream}},
        "root": {"handlers": ["stream"], "level": "INFO"}})
    logger = logging.getLogger("resomap.test_redact")
    logger.info("store %s unreachable", URI)
    try:
        raise RuntimeError(f"could not reach {URI}")
    except RuntimeError:
        logger.exception("failed with %s", {"password": PASSWORD})
    logged = stream.getvalue()
    assert "store http://***@127.0.0.1:5000 unreachable" in logged
    assert "RuntimeError: could not reach http://***@127.0.0.1:5000" in logged
    assert PASSWORD not in logged


def test_yaml_file_is_rewritten_with_secrets_masked_and_interpolations_kept(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(f"paths:\n  root_dir: /x\nlogger:\n  uri: {URI}\n  secret: abc\n"
                    "  out: ${paths.root_dir}/mlflow\n")
    assert redact_yaml_file(path)
    text = path.read_text()
    assert PASSWORD not in text and "secret: '***'" in text and "${paths.root_dir}/mlflow" in text
    assert not redact_yaml_file(path)  # nothing left to redact: the file is not touched again
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(f"- model=tiny_cnn\n- logger.mlflow.tracking_uri={URI}\n")
    assert redact_yaml_file(overrides)
    assert OmegaConf.to_container(OmegaConf.load(overrides)) == [
        "model=tiny_cnn", "logger.mlflow.tracking_uri=http://***@127.0.0.1:5000"]


def test_secret_overrides_reach_a_child_through_its_environment_with_the_same_value(clean_env):
    # The form Hydra records in hydra.overrides.task, which is what a child is given.
    escaped = URI.replace(":", "\\:")
    overrides = ["model=tiny_cnn", f"logger.mlflow.tracking_uri={escaped}", "+logger.mlflow.api_token=123456"]
    kept, env = overrides_without_secrets(overrides)
    assert kept[0] == "model=tiny_cnn"
    assert not any(PASSWORD in item or "123456" in item for item in kept)
    assert set(env.values()) == {URI, "123456"}
    for name, value in env.items():
        clean_env.setenv(name, value)
    # The child composes the same config from the argv it gets and its environment.
    cfg = compose_config("train", kept)
    assert cfg.logger.mlflow.tracking_uri == URI
    assert cfg.logger.mlflow.api_token == 123456  # an int stays an int


def test_child_command_holds_no_secret_and_carries_it_in_env(clean_env):
    source = {"provider": "main", "schema": "file", "path": str(REPO_ROOT / "conf")}
    hydra_cfg = OmegaConf.create({
        "job": {"config_name": "train"},
        "runtime": {"config_sources": [source], "output_dir": "/tmp/job"},
        "overrides": {"task": ["model=tiny_cnn", "logger.mlflow.tracking_uri=" + URI.replace(":", "\\:")]}})
    command = distributed.child_command(hydra_cfg)
    assert not any(PASSWORD in item for item in command)
    assert list(command.env.values()) == [URI]
    secret_override = next(item for item in command if item.startswith("logger.mlflow.tracking_uri="))
    assert secret_override == f"logger.mlflow.tracking_uri=${{oc.env:{next(iter(command.env))}}}"
    # Secrets inside list and dict values travel through the environment too, whole.
    nested = ["+x.uris=['" + URI + "',b]", "+extra={api_token:'pw-(1)',n:2}",
              "+y.api_token=[tk-123456,tk-7890]"]
    command = distributed.child_command(OmegaConf.merge(hydra_cfg, {"overrides": {"task": nested}}))
    secrets = (PASSWORD, "pw-(1)", "tk-123456", "tk-7890")
    assert not any(secret in item for item in command for secret in secrets)
    for name, value in command.env.items():
        clean_env.setenv(name, value)
    kept = [item for item in command if item.startswith(("+x.", "+extra", "+y."))]
    composed = compose_config("train", kept)
    cfg = OmegaConf.to_container(OmegaConf.masked_copy(composed, ["x", "extra", "y"]), resolve=True)
    assert cfg["x"]["uris"] == [URI, "b"]
    assert cfg["extra"] == {"api_token": "pw-(1)", "n": 2}
    assert cfg["y"]["api_token"] == ["tk-123456", "tk-7890"]


def test_uri_credentials_move_into_mlflow_variables(clean_env):
    assert use_env_credentials(f"https://bob:p%40ss{PASSWORD}@mlflow.example.org/api") == \
        "https://mlflow.example.org/api"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "bob"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == f"p@ss{PASSWORD}"
    assert use_env_credentials("sqlite:////tmp/a@b/mlflow.db") == "sqlite:////tmp/a@b/mlflow.db"


def test_params_tags_and_the_config_artifact_hold_no_secret(tmp_path: Path, clean_env):
    clean_env.setenv("MLFLOW_TRACKING_TOKEN", "tok-abcdef123")
    cfg = compose_config("train", [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/out",
                                   "data.root=/data", "model=tiny_cnn", f"logger.mlflow.tracking_uri={URI}",
                                   "+logger.mlflow.api_token=tok-abcdef123",
                                   "+data.note=fetched with tok-abcdef123"])
    identity = RunIdentity.from_config(cfg, "data-fp")
    settings = tracking_settings(cfg, identity)
    params, tags, document = settings.params, identity.tags(), settings.config
    assert "tok-abcdef123" not in str(identity.to_dict())
    logged = " ".join(f"{key}={value}" for key, value in {**params, **tags}.items()) + str(document)
    assert PASSWORD not in logged and "tok-abcdef123" not in logged
    assert document["logger"]["mlflow"]["tracking_uri"] == "http://***@127.0.0.1:5000"
    assert document["logger"]["mlflow"]["api_token"] == MASK
    assert document["data"]["note"] == "fetched with ***"
    assert params["model"] == "tiny_cnn" and len(params) < 20


# A password with every character RFC 3986 allows unencoded in user info (unreserved, sub-delims,
# ':') and a percent-encoded one, between two markers: any fragment that survives is found.
HARD = "Hd7q'!$&()*+,;=:~-._%41Zx9k"
FRAGMENTS = ("Hd7q", "Zx9k", "!$&()*+,;=")


def _leaks(text: str) -> list[str]:
    return [fragment for fragment in FRAGMENTS if fragment in text]


@pytest.mark.parametrize("text", [
    f"tracking_uri=http://alice:{HARD}@127.0.0.1:5000/api?x=1",
    f'logger.mlflow.tracking_uri="http://alice:{HARD}@127.0.0.1:5000"',
    f"Could not reach {{'uri': \"https://alice:{HARD}@mlflow.example.org/x\"}} (timeout)",
    "uri=" + f"http://alice:{HARD}@127.0.0.1:5000".replace(":", "\\:"),
    f"#0 : res=32 +extra={{tracking:'https://bob:{HARD}@h/x'}}",
])
def test_uri_passwords_with_any_legal_character_are_masked_whole(clean_env, text: str):
    redacted = redact_text(text)
    assert _leaks(redacted) == [], redacted
    assert "***@" in redacted


@pytest.mark.parametrize(("override", "expected"), [
    ("+extra={api_token:abc123,n:1}", "+extra={api_token:***,n:1}"),
    ("+x.api_token=[abc123,def456]", "+x.api_token=***"),
    ("+a={b:{c:[{password:'p w(1)'},{keep:1}]}}", "+a={b:{c:[{password:***},{keep:1}]}}"),
    ("++db.Passwords=[x1234567]", "++db.Passwords=***"),
    ("+svc={clientSecret:abcdefg,key_dim:64}", "+svc={clientSecret:***,key_dim:64}"),
    ("model.key_dim=64", "model.key_dim=64"),
    ("+x.api_token=${oc.env:MY_TOKEN}", "+x.api_token=${oc.env:MY_TOKEN}"),
])
def test_overrides_are_parsed_and_redacted_by_key_path_at_any_depth(clean_env, override: str, expected: str):
    assert redact_text(override) == expected
    assert redact_config({"task": [override]}) == {"task": [expected]}


@pytest.mark.parametrize("name", [
    "password", "passwords", "PASSWORD", "passwd", "pass", "DB_PASS", "pwd", "MYSQL_PWD", "secret", "secrets",
    "client_secret", "token", "tokens", "GITHUB_TOKEN", "api_key", "apikey", "apiKey", "API-KEY", "auth",
    "Authorization", "credential", "credentials", "private_key", "privateKey", "access_key",
    "AWS_SECRET_ACCESS_KEY", "ssh-key", "passphrase", "dbPassword", "X-Amz-Signature", "sig",
])
def test_secret_names_are_recognised_whatever_case_plural_or_separator(name: str):
    assert is_secret_key(name)


@pytest.mark.parametrize("name", [
    "key_dim", "key", "keys", "max_tokens", "num_tokens", "tokenizer", "patience", "keyboard", "bypass",
    "monkey", "exclude_keys", "author", "passage", "compass", "PWD", "signal", "design",
])
def test_ordinary_names_are_not_secrets(name: str):
    assert not is_secret_env_name(name) if name == "PWD" else not is_secret_key(name)


def test_redaction_masks_values_by_secret_key_only_and_never_renames_keys(clean_env):
    """The contract identity relies on: a config's keys and its non-secret values are kept."""
    config = {"model": {"key_dim": 64, "num_heads": 4, "tokenizer": "bpe", "max_tokens": 77},
              "data": {"root": "/data/x", "sizes": [32, 64]},
              "logger": {"api_key": "abc123", "DB_PASS": "pw", "credentials": {"user": "u", "pass": 1}}}
    redacted = redact_config(config)
    assert redacted["model"] == config["model"] and redacted["data"] == config["data"]
    assert redacted["logger"] == {"api_key": MASK, "DB_PASS": MASK, "credentials": MASK}


def test_secret_environment_values_are_masked_by_normalised_name(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MYSQL_PWD", "mysql-pw-1")
    monkeypatch.setenv("DB_PASS", "db-pass-22")
    monkeypatch.setenv("SERVICE_CREDENTIALS", "cred-value-3")
    assert redact_text("a mysql-pw-1 b db-pass-22 c cred-value-3") == f"a {MASK} b {MASK} c {MASK}"


def test_console_streams_are_redacted_from_the_entry_point_on(tmp_path: Path, clean_env):
    """Hydra's own error for a mistyped key echoes the override: the command line masks it, and
    a traceback printed by the interpreter too."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "resomap.train", f"trainer.not_a_key_password={HARD.replace(',', '')}",
         f'+extra={{api_token:"tk-{HARD[:4]}-zz"}}', f"paths.root_dir={tmp_path}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0 and "not_a_key_password" in output, output
    assert _leaks(output) == [] and "tk-Hd7q" not in output, output
    script = ("from resomap.redact_logs import install_stream_redaction\n"
              "install_stream_redaction()\n"
              f"print('uri', {('http://alice:' + HARD + '@h/x')!r})\n"
              f"raise RuntimeError('failed with password=' + {HARD!r})\n")
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                               timeout=120)
    output = completed.stdout + completed.stderr
    assert "RuntimeError" in output and "uri http://***@h/x" in output, output
    assert _leaks(output) == [], output
