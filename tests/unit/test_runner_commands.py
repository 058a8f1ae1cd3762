"""docker-compose.yml and `ticker run` start the same processes with the same argv."""

from pathlib import Path

import yaml

from ticker.accounts import load_accounts
from ticker.config import EXAMPLE_ACCOUNTS_FILE, PROJECT_ROOT, Settings
from ticker.runner import migrate_command, settings_environment, stack_commands

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"


def _compose_services() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def _project_services() -> dict[str, list[str]]:
    """Services built from the project's Dockerfile, with their argv."""
    services = {}
    for name, service in _compose_services().items():
        if "build" not in service:
            continue
        command = service.get("command")
        assert isinstance(command, list), f"{name}: give `command` as an argv list"
        services[name] = _normalised(command)
    return services


def _normalised(argv: list[str]) -> list[str]:
    return [Path(argv[0]).name, *argv[1:]]


def _runner_commands() -> dict[str, list[str]]:
    accounts = load_accounts(EXAMPLE_ACCOUNTS_FILE)
    commands = stack_commands(accounts, program="/some/venv/bin/ticker")
    commands["migrate"] = migrate_command(program="/some/venv/bin/ticker")
    return {name: _normalised(argv) for name, argv in commands.items()}


def test_every_project_service_runs_an_argv_the_runner_runs():
    runner = _runner_commands()

    for name, command in _project_services().items():
        assert name in runner, f"compose service {name!r} is not started by the runner"
        assert command == runner[name], f"compose service {name!r} drifted"


def test_every_runner_process_is_a_compose_service():
    services = _project_services()

    missing = sorted(set(_runner_commands()) - set(services))

    assert not missing, f"runner processes without a compose service: {missing}"


def test_compose_has_one_worker_per_example_account():
    accounts = load_accounts(EXAMPLE_ACCOUNTS_FILE)

    workers = {n for n in _project_services() if n.startswith("worker-")}

    assert workers == {f"worker-{account_id}" for account_id in accounts.ids}


def test_every_long_running_compose_service_has_a_healthcheck():
    services = _compose_services()

    without = [
        name
        for name, service in services.items()
        if name != "migrate" and "healthcheck" not in service
    ]

    assert not without


def test_stack_commands_use_the_ticker_script_beside_the_interpreter_by_default():
    accounts = load_accounts(EXAMPLE_ACCOUNTS_FILE)

    programs = {argv[0] for argv in stack_commands(accounts).values()}

    assert len(programs) == 1
    assert Path(programs.pop()).name == "ticker"


def test_settings_environment_round_trips_through_settings(monkeypatch):
    original = Settings(web_port=18080, events_channel="test:events",
                        broker_transport_options={"unacked_restore_interval": 1},
                        api_key="s3cret-key", flower_basic_auth="admin:pw123")
    for variable, value in settings_environment(original).items():
        monkeypatch.setenv(variable, value)

    rebuilt = Settings()

    assert rebuilt == original
    assert rebuilt.api_key.get_secret_value() == "s3cret-key"
    assert rebuilt.flower_basic_auth.get_secret_value() == "admin:pw123"
