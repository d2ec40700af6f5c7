"""docs/runbook.md, word for word: every helm, kubectl and manage.py command it shows runs against what
the chart creates.

Part of the offline deployment checks (tests/deploy_tools.py has the shared helpers).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy_tools import (
    ALERTS_FILE,
    CHART,
    DOCKERFILE,
    NAMESPACE,
    RELEASE,
    ROOT,
    RUNBOOK,
    WEB,
    code_blocks,
    container,
    flag_value,
    labels_match,
    pod_templates,
    render,
    shell_commands,
)


def runbook_commands() -> list[list[str]]:
    """Commands of the runbook's shell blocks, and the ones it gives inline (`kubectl get pods -n moai`);
    a bare subcommand named in a sentence (`kubectl scale`) is not a command."""
    text = RUNBOOK.read_text()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    inline = [c for c in re.findall(r"`((?:helm|kubectl|docker) [^`]+)`", prose) if len(c.split()) >= 3]
    return shell_commands("\n".join([*code_blocks(text, "bash", "sh"), *inline]))


def test_runbook_uses_only_commands_these_tests_check():
    programs = {c[0] for c in runbook_commands()}
    assert programs <= {"helm", "kubectl", "docker", "openssl", "printf", "curl", "base64"}, programs
    assert {"helm", "kubectl", "docker"} <= programs


def test_runbook_helm_commands_render(helm):
    commands = [c for c in runbook_commands() if c[0] == "helm"]
    assert {c[1] for c in commands} == {"install", "upgrade", "rollback"}
    for command in commands:
        # Without it helm works in the kube context's namespace, where there is no release.
        assert flag_value(command, "--namespace", "-n") == NAMESPACE, command
        assert command[2] == RELEASE
        if command[1] in ("install", "upgrade"):
            assert command[3] == "deploy/helm/moai-service"
            if command[1] == "upgrade":
                # Without it every earlier --set (mTLS!) falls back to the chart's default.
                assert "--reuse-values" in command, command
            flags = [w for w in command[4:] if w not in ("--create-namespace", "--reuse-values")]
            # Keys and passwords the runbook generates with openssl: any 64 characters stand in for them.
            render(helm, *[re.sub(r"\$[A-Z_]+", "0" * 64, w) for w in flags])


def test_runbook_set_flags_and_values_snippets_are_valid(helm, tmp_path):
    text = RUNBOOK.read_text()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    sets = re.findall(r"--set ([\w.\-]+=[^`\s]+)", prose)
    assert len(sets) >= 4
    render(helm, *[w for s in sets for w in ("--set", s)])
    for i, block in enumerate(code_blocks(text, "yaml")):
        values = tmp_path / f"snippet-{i}.yaml"
        values.write_text(block)
        render(helm, "-f", str(values))
    # Value names the runbook mentions exist in values.yaml (a `*` stands for any key).
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    mentioned = [n for n in re.findall(r"`([a-z][A-Za-z]*(?:\.[A-Za-z*]+)+)`", text) if n.split(".")[0] in values]
    assert len(mentioned) >= 15
    for name in mentioned:
        node: Any = values
        for part in name.split("."):
            if part == "*":
                break
            assert isinstance(node, dict), name
            assert part in node, f"the runbook names {name}, which is not a value"
            node = node[part]


def test_runbook_kubectl_commands_target_what_the_chart_creates(renders, helm):
    objects = [o for name in ("default", "production") for o in renders[name]]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    pods = {f"{o['metadata']['name']}-0" for o in objects if o["kind"] == "StatefulSet"}
    templates = [t["metadata"]["labels"] for t in pod_templates(renders["default"]).values()]
    commands = [c for c in runbook_commands() if c[0] == "kubectl"]
    assert len(commands) > 20
    for command in commands:
        verb = command[1]
        namespaced = flag_value(command, "-n", "--namespace") == NAMESPACE or any(
            re.match(rf"{NAMESPACE}/[^:]+:", w) for w in command
        )
        assert namespaced or command[1:4] in (["label", "namespace", NAMESPACE], ["create", "namespace", NAMESPACE]), (
            command
        )
        selector = flag_value(command, "-l")
        if selector:
            wanted = dict(pair.split("=") for pair in selector.split(","))
            matched = [labels for labels in templates if labels_match(wanted, labels)]
            assert matched, command
            if wanted == {"app": "moai-service"}:
                assert len(matched) == len(templates)  # every pod, as the runbook's log command expects
        if verb == "scale":
            assert command[2] == "deployment", command
            assert ("Deployment", command[3]) in names, command
        elif verb == "exec":
            target = positional_after(command, "exec")
            if target.startswith("deploy/"):
                assert ("Deployment", target.removeprefix("deploy/")) in names, command
            elif not target.startswith("$"):
                assert target in pods, command
        elif verb == "cp":
            for word in command[2:4]:
                if ":" in word and not word.split(":")[0].split("/")[-1].startswith("$"):
                    assert word.split(":")[0].split("/")[-1] in pods, command
        elif verb == "get" and command[2] == "secret":
            name = positional_after(command, "secret")
            assert ("Secret", name) in names, command
            jsonpath = flag_value(command, "-o") or ""
            key = re.search(r"\{\.data\.(.+)\}", jsonpath)
            if key:
                keys = {k for o in objects if (o["kind"], o["metadata"]["name"]) == ("Secret", name) for k in o["data"]}
                assert key.group(1).replace("\\.", ".") in keys, command


def positional_after(command: list[str], word: str) -> str:
    """The first argument after `word` that is neither a flag nor a flag's value."""
    takes_value = {"-n", "--namespace", "-c", "--container", "-o", "-l"}
    i = command.index(word) + 1
    while command[i].startswith("-"):
        i += 2 if command[i] in takes_value else 1
    return command[i]


def test_runbook_manage_commands_exist_and_their_arguments_parse():
    from django.core.management import get_commands, load_command_class

    calls = []
    for command in runbook_commands():
        if command[:2] == ["kubectl", "exec"] and "--" in command:
            inner = command[command.index("--") + 1 :]
            if inner[:2] == ["python", "manage.py"]:
                calls.append(inner[2:])
    documented = {call[0] for call in calls}
    # The ops commands operators answer incidents with (API.md) are all shown.
    assert {
        "invalidate_sessions", "rotate_client_keys", "expire_sessions", "queue_status", "export_audit_log",
        "verify_audit_log", "disable_client", "enable_client", "create_client", "register_model", "enroll_totp",
    } <= documented  # fmt: skip
    commands = get_commands()
    for call in calls:
        assert call[0] in commands, call
        parser = load_command_class(commands[call[0]], call[0]).create_parser("manage.py", call[0])
        parser.parse_args(call[1:])  # a CommandError on an unknown or missing argument


def test_runbook_builds_and_pushes_the_image_the_chart_deploys(renders):
    image = container(renders["default"], "Deployment", WEB)["image"]
    commands = [c for c in runbook_commands() if c[0] == "docker"]
    (build,) = [c for c in commands if c[1] == "build"]
    assert (ROOT / flag_value(build, "-f")).resolve() == DOCKERFILE  # type: ignore[operator]
    assert flag_value(build, "-t") == image
    assert build[-1] == "."
    (push,) = [c for c in commands if c[1] == "push"]
    assert push[2] == image


def test_runbook_scrape_configuration_names_the_charts_secret_services_and_ports(renders):
    """The runbook's prometheus.yml for mTLS without the operator parses and points at what the chart makes."""
    (block,) = code_blocks(RUNBOOK.read_text(), "prometheus")
    config = yaml.safe_load(block)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"moai-web", "moai-worker"}
    assert config["rule_files"] == [ALERTS_FILE.name]
    objects = renders["production"]
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    secrets = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    monitors = {o["metadata"]["name"]: o for o in renders["production"] if o["kind"] == "ServiceMonitor"}
    for job in jobs.values():
        assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [NAMESPACE]
        (keep,) = job["relabel_configs"]
        service, port = keep["regex"].split(";")
        assert port in {p["name"] for p in services[service]["spec"]["ports"]}, (service, port)
    tls = jobs["moai-web"]["tls_config"]
    assert jobs["moai-web"]["scheme"] == "https"
    folders = {Path(tls[name]).parent.name for name in ("ca_file", "cert_file", "key_file")}
    assert folders == {f"{RELEASE}-metrics-client"}
    assert folders <= secrets
    web_monitor = monitors[f"{RELEASE}-web"]["spec"]["endpoints"][0]
    assert tls["server_name"] == web_monitor["tlsConfig"]["serverName"]
