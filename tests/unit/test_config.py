"""The fleet file: good files load; a bad one names the file, the 1-based line and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradientlab.config import (
    REAL_EXTENSION_ID,
    Fleet,
    FleetFileError,
    LocalSettings,
    OciSettings,
    SecretRef,
    SshSettings,
    load_fleet,
    parse_fleet,
    resolve_secret,
)
from gradientlab.sandbox.extension_id import SANDBOX_EXTENSION_ID

REPO = Path(__file__).resolve().parents[2]
SOURCE = "fleets/test.yaml"

# A valid fleet; each test swaps one line (or adds some) and expects the error on that line.
GOOD = """\
# a comment, so that YAML lines and file lines must both be counted from the top
account:
  email: ops@example.test
  password: {env: GRADIENTLAB_TEST_CONFIG_PASSWORD}
providers:
  local:
    kind: local
    base_address: 127.0.0.10
    ssh_port: 2222
  inv:
    kind: ssh
  cloud:
    kind: oci
    credentials_block: oci-creds
    compartment_id: ocid1.compartment.oc1..test
    operator_cidr: 203.0.113.0/24
    region: eu-frankfurt-1
hosts:
  - name: node-1
    provider: local
  - name: node-2
    provider: local
  - name: pi
    provider: inv
    address: 192.168.1.20
    user: pi
    key: {secret_block: pi-key}
"""


def line_no(text: str, needle: str) -> int:
    """The 1-based line of the one line of `text` that contains `needle`."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def swap(old: str, new: str, text: str = GOOD) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def error_of(text: str, source: str = SOURCE) -> str:
    with pytest.raises(FleetFileError) as info:
        parse_fleet(text, source)
    return str(info.value)


def assert_names(message: str, source: str, line: int, field: str) -> None:
    """One problem, reported as `<source>:<line>: <field>: ...`."""
    assert message.startswith(f"{source}:{line}: {field}: "), message


# ---------------------------------------------------------------- good files


def test_the_base_fleet_parses_with_its_providers_and_hosts() -> None:
    fleet = parse_fleet(GOOD, SOURCE)
    assert fleet.source == SOURCE
    assert fleet.account.email == "ops@example.test"
    assert fleet.account.password == SecretRef(env="GRADIENTLAB_TEST_CONFIG_PASSWORD")
    assert isinstance(fleet.providers["local"], LocalSettings)
    assert isinstance(fleet.providers["inv"], SshSettings)
    assert isinstance(fleet.providers["cloud"], OciSettings)
    assert fleet.providers["cloud"].kind == "oci"
    assert [h.name for h in fleet.hosts] == ["node-1", "node-2", "pi"]
    assert fleet.host("pi").key == SecretRef(secret_block="pi-key")
    # the network section is optional and defaults to the real Gradient network
    assert fleet.network.extension_id == REAL_EXTENSION_ID
    assert "{chromium_version}" in fleet.network.extension_source
    assert "{extension_id}" in fleet.network.extension_source


def test_host_lookup_names_the_file_when_the_host_is_missing() -> None:
    fleet = parse_fleet(GOOD, SOURCE)
    with pytest.raises(KeyError, match=re.escape(SOURCE)):
        fleet.host("node-9")


def test_fleet_example_yaml_loads() -> None:
    path = REPO / "fleet.example.yaml"
    fleet = load_fleet(path)
    assert isinstance(fleet, Fleet)
    assert fleet.source == str(path)
    assert fleet.account.password.env == "GRADIENT_PASSWORD"
    assert [h.name for h in fleet.hosts] == ["node-1", "node-2"]
    assert {h.provider for h in fleet.hosts} == {"local"}
    local = fleet.providers["local"]
    assert isinstance(local, LocalSettings)
    assert local.ssh_port == 2222
    assert fleet.network.extension_id == REAL_EXTENSION_ID


def test_fleet_demo_yaml_loads_and_points_at_the_sandbox() -> None:
    fleet = load_fleet(str(REPO / "fleet.demo.yaml"))
    assert [h.name for h in fleet.hosts] == ["demo-1", "demo-2", "demo-3"]
    assert fleet.network.extension_id == SANDBOX_EXTENSION_ID
    assert fleet.network.api_base.startswith("http://127.0.0.1:")
    assert "{chromium_version}" in fleet.network.extension_source
    assert fleet.runner.browser_check_seconds == 1
    assert fleet.schedules.health_seconds == 30


def test_the_fleet_is_frozen() -> None:
    fleet = parse_fleet(GOOD, SOURCE)
    with pytest.raises(ValueError):
        fleet.hosts[0].name = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- secrets in the file


def test_an_inline_password_is_refused_without_echoing_it() -> None:
    text = swap(
        "  password: {env: GRADIENTLAB_TEST_CONFIG_PASSWORD}", "  password: hunter2-Secret!"
    )
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "password:"), "account.password")
    assert "never written in the fleet file" in message
    assert "hunter2-Secret!" not in message


@pytest.mark.parametrize(
    "ref",
    ["{env: A, secret_block: b}", "{}"],
    ids=["both", "neither"],
)
def test_a_password_ref_needs_exactly_one_of_env_or_secret_block(ref: str) -> None:
    text = swap(
        "  password: {env: GRADIENTLAB_TEST_CONFIG_PASSWORD}",
        "\n  # the password, badly\n  password: " + ref,
    )
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "password:"), "account.password")
    assert "exactly one of `env` or `secret_block`" in message


def test_a_host_key_ref_with_both_sources_names_the_host() -> None:
    text = swap("    key: {secret_block: pi-key}", "    key: {env: K, secret_block: pi-key}")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "key: {env"), "hosts[2].key")


# ---------------------------------------------------------------- fields


def test_an_unknown_field_is_refused_on_its_own_line() -> None:
    text = swap("    ssh_port: 2222", "    ssh_port: 2222\n    sshport: 22")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "sshport:"), "providers.local.sshport")
    assert "Extra inputs are not permitted" in message


def test_an_unknown_top_level_section_is_refused() -> None:
    text = GOOD + "shedules: {health_seconds: 5}\n"
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "shedules:"), "shedules")
    assert "Extra inputs are not permitted" in message


def test_an_unknown_block_section_is_reported_on_the_line_of_its_key() -> None:
    text = GOOD + "shedules:\n  health_seconds: 5\n"
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "shedules:"), "shedules")


def test_a_wrong_type_inside_a_tagged_provider_names_the_provider_not_the_tag() -> None:
    text = swap("    ssh_port: 2222", "    ssh_port: twenty-two")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "ssh_port:"), "providers.local.ssh_port")


def test_a_wrong_type_in_a_cloud_provider_names_its_line() -> None:
    text = swap("    region: eu-frankfurt-1", "    region: [1, 2]")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "region: [1"), "providers.cloud.region")


def test_ssh_open_to_the_whole_internet_is_refused() -> None:
    text = swap("    operator_cidr: 203.0.113.0/24", "    operator_cidr: 0.0.0.0/0")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "0.0.0.0/0"), "providers.cloud.operator_cidr")


def test_an_unknown_provider_kind_is_refused() -> None:
    text = swap("    kind: ssh", "    kind: vagrant")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "kind: vagrant"), "providers.inv.kind")
    assert "vagrant" in message


def test_a_missing_required_field_names_the_mapping_that_lacks_it() -> None:
    text = "account: {password: {env: X}}\nproviders: {}\n"
    message = error_of(text)
    assert_names(message, SOURCE, 1, "account.email")
    assert "Field required" in message


def test_an_email_without_at_is_refused() -> None:
    text = swap("  email: ops@example.test", "  email: ops.example.test")
    assert_names(error_of(text), SOURCE, line_no(text, "email:"), "account.email")


def test_two_problems_are_both_reported_each_with_its_line() -> None:
    text = swap("    ssh_port: 2222", "    ssh_port: x")
    text = swap("  - name: node-2", "  - name: Node_2", text)
    problems = error_of(text).splitlines()
    assert len(problems) == 2
    assert problems[0].startswith(f"{SOURCE}:{line_no(text, 'ssh_port:')}: ")
    assert problems[1].startswith(f"{SOURCE}:{line_no(text, 'Node_2')}: hosts[1].name: ")


# ---------------------------------------------------------------- hosts


@pytest.mark.parametrize("bad", ["Node-2", "2node", "node_2", "-node", "n" * 32, "''"], ids=repr)
def test_a_bad_host_name_is_refused(bad: str) -> None:
    text = swap("  - name: node-2", f"  - name: {bad}")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, f"- name: {bad}"), "hosts[1].name")
    assert "lowercase letters, digits and dashes" in message


def test_the_longest_host_name_is_accepted() -> None:
    text = swap("  - name: node-2", "  - name: " + "n" * 31)
    assert parse_fleet(text).hosts[1].name == "n" * 31


def test_a_duplicate_host_name_names_the_second_one() -> None:
    text = swap("  - name: pi", "  - name: node-1")
    message = error_of(text)
    second = [i for i, ln in enumerate(text.splitlines(), 1) if "name: node-1" in ln][1]
    assert_names(message, SOURCE, second, "hosts[2].name")
    assert "'node-1' is used twice" in message


def test_a_host_naming_an_unknown_provider_lists_the_declared_ones() -> None:
    text = swap("    provider: inv", "    provider: azure-west")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "azure-west"), "hosts[2].provider")
    assert "unknown provider 'azure-west'" in message
    assert "['cloud', 'inv', 'local']" in message


def test_an_ssh_inventory_host_needs_address_and_user() -> None:
    text = swap("    user: pi\n", "")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "name: pi"), "hosts[2]")
    assert "`address` and `user`" in message


def test_a_bad_host_address_is_refused() -> None:
    text = swap("    address: 192.168.1.20", "    address: 'pi box'")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "pi box"), "hosts[2].address")


def test_a_host_name_address_is_accepted() -> None:
    text = swap("    address: 192.168.1.20", "    address: pi.lan")
    assert parse_fleet(text).host("pi").address == "pi.lan"


def test_flow_style_hosts_are_located_too() -> None:
    text = (
        "account: {email: a@b.c, password: {env: X}}\n"
        "providers:\n"
        "  local: {kind: local}\n"
        "hosts:\n"
        "  - {name: a, provider: local}\n"
        "  - {name: b, provider: nowhere}\n"
    )
    assert_names(error_of(text), SOURCE, 6, "hosts[1].provider")


# ---------------------------------------------------------------- not a fleet file at all


def test_invalid_yaml_names_the_line() -> None:
    text = "account:\n  email: a@b.c\n password: {env: X}\nproviders: {}\n"
    message = error_of(text)
    assert message.startswith(f"{SOURCE}:3: not valid YAML")


def test_invalid_yaml_deep_in_the_file_names_that_line() -> None:
    text = GOOD + "runner:\n  chromium: /usr/bin/chromium\n\tbrowser_check_seconds: 1\n"
    message = error_of(text)
    assert message.startswith(f"{SOURCE}:{line_no(text, 'browser_check_seconds')}: not valid YAML")


def test_two_documents_are_refused() -> None:
    message = error_of(GOOD + "---\nhosts: []\n")
    assert message.startswith(f"{SOURCE}:{line_no(GOOD, 'key: {secret') + 1}: not valid YAML")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"], ids=repr)
def test_a_top_level_that_is_not_a_mapping_is_refused(text: str) -> None:
    message = error_of(text)
    assert message.startswith(f"{SOURCE}:1: ")
    assert "must be a mapping" in message


def test_a_missing_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "fleet.yaml"
    with pytest.raises(FleetFileError, match=re.escape(f"{path}: no such fleet file")):
        load_fleet(path)


def test_a_bad_file_on_disk_names_its_path_line_and_field(tmp_path: Path) -> None:
    example = (REPO / "fleet.example.yaml").read_text()
    text = swap("  - name: node-2", "  - name: node 2", example)
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(FleetFileError) as info:
        load_fleet(path)
    assert_names(str(info.value), str(path), line_no(text, "name: node 2"), "hosts[1].name")


def test_a_duplicated_key_is_refused_naming_both_lines() -> None:
    text = swap("    ssh_port: 2222", "    ssh_port: 2222\n    ssh_port: abc")
    message = error_of(text)
    first, second = line_no(text, "ssh_port: 2222"), line_no(text, "ssh_port: abc")
    assert message == f"{SOURCE}:{second}: ssh_port: given twice (first at line {first})"


# ---------------------------------------------------------------- resolving secrets

ENV = "GRADIENTLAB_TEST_CONFIG_PASSWORD"


def test_resolve_secret_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "s3cr3t-value")
    assert resolve_secret(SecretRef(env=ENV)) == "s3cr3t-value"


def test_resolve_secret_prefers_env_and_never_calls_the_block_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, "from-env")

    def reader(name: str) -> str:
        raise AssertionError(f"read {name}")

    assert resolve_secret(SecretRef(env=ENV), reader) == "from-env"


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_resolve_secret_names_a_missing_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, value)
    with pytest.raises(FleetFileError, match=f"env:{ENV} is not set"):
        resolve_secret(SecretRef(env=ENV))


def test_resolve_secret_errors_never_contain_a_secret_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRADIENTLAB_TEST_OTHER_SECRET", "other-s3cr3t")
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(FleetFileError) as info:
        resolve_secret(SecretRef(env=ENV))
    assert "other-s3cr3t" not in str(info.value)
    assert "other-s3cr3t" not in repr(info.value)


def test_resolve_secret_block_without_a_reader_says_it_needs_prefect() -> None:
    with pytest.raises(FleetFileError, match="secret_block:gradient-password needs Prefect"):
        resolve_secret(SecretRef(secret_block="gradient-password"))


def test_resolve_secret_block_with_a_reader_reads_that_block() -> None:
    asked: list[str] = []

    def reader(name: str) -> str:
        asked.append(name)
        return f"value-of-{name}"

    ref = SecretRef(secret_block="gradient-password")
    assert resolve_secret(ref, reader) == "value-of-gradient-password"
    assert asked == ["gradient-password"]


def test_secret_ref_describes_where_it_lives_not_what_it_is() -> None:
    assert SecretRef(env="X").describe() == "env:X"
    assert SecretRef(secret_block="b").describe() == "secret_block:b"


def test_api_pace_is_a_network_setting_and_must_be_positive() -> None:
    paced = swap(
        "providers:\n", "network:\n  requests_per_second: 50\n  node_page_size: 1000\nproviders:\n"
    )
    fleet = parse_fleet(paced, SOURCE)
    assert (fleet.network.requests_per_second, fleet.network.node_page_size) == (50, 1000)
    default = parse_fleet(GOOD, SOURCE).network
    # by default no fixed pace: the client finds the network's limit, below a ceiling
    assert (default.requests_per_second, default.max_requests_per_second) == (None, 100)
    ceiling = swap("requests_per_second: 50", "max_requests_per_second: 0", paced)
    assert_names(
        error_of(ceiling),
        SOURCE,
        line_no(ceiling, "max_requests_per_second"),
        "network.max_requests_per_second",
    )

    stopped = swap("requests_per_second: 50", "requests_per_second: 0", paced)
    assert_names(
        error_of(stopped),
        SOURCE,
        line_no(stopped, "requests_per_second"),
        "network.requests_per_second",
    )


# ---------------------------------------------------------------- values that would hurt the fleet


def with_section(section: str) -> str:
    """GOOD with a section added before `providers:`."""
    return swap("providers:\n", f"{section}providers:\n")


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("    ssh_port: 2222", "    ssh_port: 0", "providers.local.ssh_port"),
        ("    ssh_port: 2222", "    ssh_port: 70000", "providers.local.ssh_port"),
        ("    user: pi", "    user: pi\n    port: -22", "hosts[2].port"),
    ],
)
def test_a_port_outside_1_to_65535_is_refused(old: str, new: str, field: str) -> None:
    text = swap(old, new)
    message = error_of(text)
    bad = new.splitlines()[-1].strip()
    assert_names(message, SOURCE, line_no(text, bad), field)
    assert "greater than or equal to 1" in message or "less than or equal to 65535" in message


@pytest.mark.parametrize(
    ("section", "needle", "field"),
    [
        ("runner:\n  status_interval_seconds: 0\n", "status_interval_seconds",
         "runner.status_interval_seconds"),
        ("runner:\n  browser_check_seconds: -1\n", "browser_check_seconds",
         "runner.browser_check_seconds"),
        ("health:\n  interval_seconds: 0\n", "interval_seconds", "health.interval_seconds"),
        ("health:\n  recovery_wait_seconds: 0\n", "recovery_wait_seconds",
         "health.recovery_wait_seconds"),
        ("schedules:\n  health_seconds: 0\n", "health_seconds", "schedules.health_seconds"),
        ("schedules:\n  rewards_seconds: -60\n", "rewards_seconds", "schedules.rewards_seconds"),
        ("health:\n  budgets:\n    reboot_host: -1\n", "reboot_host",
         "health.budgets.reboot_host"),
    ],
)  # fmt: skip
def test_an_interval_or_budget_that_would_busy_loop_is_refused(
    section: str, needle: str, field: str
) -> None:
    text = with_section(section)
    assert_names(error_of(text), SOURCE, line_no(text, needle), field)


def test_a_zero_budget_means_never_that_rung() -> None:
    fleet = parse_fleet(with_section("health:\n  budgets:\n    reboot_host: 0\n"), SOURCE)
    assert fleet.health.budgets.reboot_host == 0


def test_root_as_the_ssh_user_is_refused_for_inventory_hosts_and_clouds() -> None:
    text = swap("    user: pi", "    user: root")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, "user: root"), "hosts[2].user")
    assert "unprivileged" in message
    cloud = swap("    region: eu-frankfurt-1", "    region: eu-frankfurt-1\n    ssh_user: root")
    assert_names(
        error_of(cloud), SOURCE, line_no(cloud, "ssh_user: root"), "providers.cloud.ssh_user"
    )


@pytest.mark.parametrize(
    "field", ["api_base", "identity_base", "token_base", "dashboard_url", "extension_source"]
)
def test_plain_http_to_the_real_network_is_refused(field: str) -> None:
    text = with_section(f"network:\n  {field}: http://api.gradient.network/api\n")
    message = error_of(text)
    assert_names(message, SOURCE, line_no(text, f"{field}:"), f"network.{field}")
    assert "plain http to api.gradient.network is refused" in message


@pytest.mark.parametrize(
    "address",
    ["http://127.0.0.1:8765/api", "http://localhost:8765/api", "http://10.201.0.1:8765/api",
     "https://api.gradient.network/api"],
)  # fmt: skip
def test_http_to_a_sandbox_here_or_on_a_private_address_and_https_are_accepted(
    address: str,
) -> None:
    fleet = parse_fleet(with_section(f"network:\n  api_base: {address}\n"), SOURCE)
    assert fleet.network.api_base == address


def test_an_address_that_is_not_http_is_refused() -> None:
    text = with_section("network:\n  api_base: ftp://api.gradient.network/api\n")
    assert "is not an http(s) address" in error_of(text)
