"""LLM config: presets, YAML files, env resolution and one-line errors."""

from __future__ import annotations

import pytest

from llm_access.config import DEFAULT_DEEPSEEK_MODEL, choose_llm_configs, load_llm_config

from user_errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("DEEPSEEK_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "DEEPSEEK_MODEL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout


def test_local_preset_is_embedded_lenient_and_serial():
    config = load_llm_config("local", "evol")
    assert config.embedded and config.parse_mode == "lenient" and config.concurrency == 1
    assert config.api_key() == "not-needed"


def test_optimizer_presets_sample_like_the_paper():
    for preset in ("deepseek", "openai", "local"):
        config = load_llm_config(preset, "optim")
        assert (config.temperature, config.top_p) == (0.6, 0.95)


def test_deepseek_preset_reads_model_and_key_name(monkeypatch):
    config = load_llm_config("deepseek", "evol")
    assert config.base_url == "https://api.deepseek.com" and config.model == DEFAULT_DEEPSEEK_MODEL
    assert config.api_key_env == "DEEPSEEK_API_KEY"
    monkeypatch.setenv("DEEPSEEK_MODEL", "deepseek-v4-pro")
    assert load_llm_config("deepseek", "evol").model == "deepseek-v4-pro"


def test_openai_preset_honours_base_url(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert load_llm_config("openai", "evol").base_url == "http://127.0.0.1:9/v1"


def test_missing_key_names_the_variable_in_one_line():
    config = load_llm_config("deepseek", "evol")
    with pytest.raises(ConfigError) as error:
        config.api_key()
    assert "DEEPSEEK_API_KEY" in str(error.value) and "\n" not in str(error.value)


def test_key_is_read_from_env_and_never_dumped(monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test-secret-value-123456789")
    config = load_llm_config("deepseek", "evol")
    assert config.api_key() == "sk-test-secret-value-123456789"
    assert "sk-test-secret" not in config.model_dump_json()


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("DEEPSEEK_API_KEY=from-dotenv\n")
    evol, optim, note = choose_llm_configs(None, None)
    assert evol.name == optim.name == "deepseek" and "deepseek" in note
    assert evol.api_key() == "from-dotenv"


def test_default_is_local_without_a_key():
    evol, optim, note = choose_llm_configs(None, None)
    assert evol.embedded and optim.embedded
    assert "local" in note and "\n" not in note


def test_one_flag_configures_both_roles():
    evol, optim, _ = choose_llm_configs("openai", None)
    assert evol.name == optim.name == "openai"
    assert optim.temperature == 0.6


def test_yaml_file_overrides_a_preset(tmp_path):
    path = tmp_path / "vllm.yaml"
    path.write_text("preset: openai\nbase_url: http://127.0.0.1:8000/v1\nmodel: qwen\napi_key_env: VLLM_KEY\n"
                    "concurrency: 32\nextra_body: {top_k: 20}\nmax_tokens: 512\n")
    config = load_llm_config(str(path), "optim")
    assert (config.base_url, config.model, config.concurrency, config.max_tokens) == ("http://127.0.0.1:8000/v1", "qwen", 32, 512)
    assert config.extra_body == {"top_k": 20} and config.temperature == 0.6 and config.name == "vllm.yaml"


def test_yaml_errors_are_one_line(tmp_path):
    bad_field = tmp_path / "bad.yaml"
    bad_field.write_text("model: x\ntemprature: 0.1\n")
    with pytest.raises(ConfigError, match="bad.yaml: temprature") as error:
        load_llm_config(str(bad_field), "evol")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="neither a preset"):
        load_llm_config("no-such-preset-or-file", "evol")


@pytest.mark.parametrize("line,named", [
    ("extra_body: {api_key: sk-inline-0123456789}", "extra_body.api_key"),
    ("base_url: https://user:pass@api.example.com/v1", "base_url https://api.example.com/v1: holds credentials"),
    ("base_url: https://api.example.com/v1?api_key=sk-inline-0123456789", "base_url https://api.example.com/v1:"),
    ("base_url: https://api.example.com/v1?key=sk-inline-0123456789", "holds credentials"),
    ("base_url: https://api.example.com/v1?model=x&token=sk-inline-0123456789", "holds credentials"),
    ("endpoints: [{base_url: 'http://10.0.0.5:8000/v1?access_token=sk-inline-0123456789'}]", "holds credentials"),
    ("extra_body: {headers: {Authorization: Bearer sk-inline-0123456789}}", "extra_body.headers.Authorization"),
    ("extra_body: {headers: {X-Custom: Bearer sk-inline-0123456789}}", "extra_body.headers.X-Custom"),
    ("extra_body: {options: [{auth: sk-inline-0123456789}]}", "extra_body.options[0].auth"),
    ("extra_body: {metadata: {accessToken: sk-inline-0123456789}}", "extra_body.metadata.accessToken"),
    ("extra_body: {nested: {deeper: {password: sk-inline-0123456789}}}", "extra_body.nested.deeper.password"),
    ("extra_body: {secret: sk-inline-0123456789}", "extra_body.secret"),
    ("extra_body: {callback: 'https://hooks.example.com/x?sig=sk-inline-0123456789'}", "extra_body.callback"),
])
def test_a_secret_written_into_the_config_is_refused_in_one_line(tmp_path, line, named):
    config = tmp_path / "inline.yaml"
    config.write_text(f"preset: openai\n{line}\n")
    with pytest.raises(ConfigError) as error:
        load_llm_config(str(config), "evol")
    message = str(error.value)
    assert "inline.yaml" in message and named in message and "\n" not in message
    assert "sk-inline" not in message and "pass@" not in message


def test_ordinary_extra_body_fields_are_not_taken_for_secrets(tmp_path):
    config = tmp_path / "fine.yaml"
    config.write_text("preset: openai\nextra_body: {max_tokens: 64, top_k: 20, chat_template_kwargs: {enable_thinking: false}}\n")
    assert load_llm_config(str(config), "evol").extra_body["top_k"] == 20


@pytest.mark.parametrize("line,field", [
    ("max_retries: -5", "max_retries"), ("timeout: 0", "timeout"), ("timeout: -1", "timeout"),
    ("max_tokens: 0", "max_tokens"), ("temperature: 7", "temperature"), ("temperature: -0.1", "temperature"),
    ("top_p: 0", "top_p"), ("top_p: 1.5", "top_p"), ("concurrency: 0", "concurrency"),
    ("base_url: api.example.com/v1", "base_url"), ("base_url: ftp://api.example.com/v1", "base_url"),
    ("base_url: [http://a:1/v1, 'b:2/v1']", "base_url"),
    ("endpoints: [{base_url: 'localhost:8000/v1'}]", "endpoints.0.base_url"),
])
def test_a_value_that_cannot_work_is_one_line_naming_the_field_and_file(tmp_path, line, field):
    config = tmp_path / "ranges.yaml"
    config.write_text(f"preset: openai\n{line}\n")
    with pytest.raises(ConfigError) as error:
        load_llm_config(str(config), "evol")
    message = str(error.value)
    assert message.startswith(f"{config}: ") and field in message and "\n" not in message


@pytest.mark.parametrize("line", ["max_retries: 0", "temperature: 0", "temperature: 2", "top_p: 1",
                                  "base_url: HTTPS://API.EXAMPLE.COM/v1", "base_url: http://[::1]:8000/v1"])
def test_the_edges_of_each_range_are_accepted(tmp_path, line):
    config = tmp_path / "edges.yaml"
    config.write_text(f"preset: openai\n{line}\n")
    load_llm_config(str(config), "evol")


def test_a_preset_with_a_broken_url_from_the_environment_is_one_line(monkeypatch):
    monkeypatch.setenv("DEEPSEEK_BASE_URL", "api.deepseek.com")
    with pytest.raises(ConfigError, match="LLM preset 'deepseek'.*not an http"):
        load_llm_config("deepseek", "evol")
