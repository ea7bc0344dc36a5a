"""Security properties that a code review forgets and a test does not (docs/security.md):

* no shell: no ``shell=True``, ``os.system``/``os.popen``, ``eval``/``exec``, and
  every subprocess gets an argument list, so a user's string never reaches a shell;
* YAML only through the safe loader; nothing extracts archives (wheels are read in
  place, member names checked);
* HTML autoescaped, and links built from data are relative;
* the GitHub workflows: read-only by default, write permissions only where the
  report is published, no ``pull_request_target``, no secrets on pull requests,
  every action pinned to a commit, expressions kept out of shell scripts, and
  every kernel-matrix option they pass exists.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli import build_parser
from orchestrator.reporting.html import relative_href

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "orchestrator"
# Jobs that publish to the pull request; the only ones that may write, and only there.
PUBLISHING_JOBS = ("report", "compare")
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def dotted(node: ast.AST) -> str:
    """``os.system`` for the expression ``os.system``; '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def findings(source: str, name: str = "<source>") -> list[str]:
    """Every dangerous construct in ``source``, as ``name:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = dotted(node.func)
        where = f"{name}:{node.lineno}"
        keywords = {k.arg: k.value for k in node.keywords}
        shell = keywords.get("shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            found.append(f"{where}: shell=")
        if func in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
            found.append(f"{where}: {func}")
        if func in ("eval", "exec", "compile", "pickle.load", "pickle.loads", "marshal.loads"):
            found.append(f"{where}: {func}")
        if func == "yaml.load" or func.endswith("yaml.unsafe_load") or func == "yaml.full_load":
            loader = dotted(keywords.get("Loader", ast.Constant(None)))
            if loader not in ("yaml.SafeLoader", "yaml.CSafeLoader", "SafeLoader"):
                found.append(f"{where}: {func} without SafeLoader")
        if func.split(".")[-1] in ("extract", "extractall"):
            found.append(f"{where}: archive {func.split('.')[-1]}")
        if func.split(".")[-1] in SUBPROCESS_CALLS and func.split(".")[0] in ("subprocess", ""):
            command = node.args[0] if node.args else keywords.get("args")
            if isinstance(command, ast.Constant | ast.JoinedStr | ast.BinOp):
                found.append(f"{where}: {func} with a command string, not a list")
    return found


def package_sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_scan_finds_what_it_looks_for() -> None:
    bad = """
import os, subprocess, yaml, pickle
subprocess.run(f"cmake {user}", shell=True)
subprocess.Popen("ls -l")
os.system("rm -rf " + path)
eval(text)
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
zipfile.ZipFile(w).extractall(d)
pickle.loads(b)
"""
    kinds = [f.split(": ", 1)[1] for f in findings(bad)]
    assert kinds == [
        "shell=",
        "subprocess.run with a command string, not a list",
        "subprocess.Popen with a command string, not a list",
        "os.system",
        "eval",
        "yaml.load without SafeLoader",
        "yaml.load without SafeLoader",
        "archive extractall",
        "pickle.loads",
    ]
    fine = "subprocess.run(['cmake', user], check=True)\nyaml.load(t, Loader=yaml.SafeLoader)\n"
    assert findings(fine) == []


def test_the_package_has_no_shell_no_eval_no_unsafe_yaml_no_extraction() -> None:
    problems = [
        finding
        for path in package_sources()
        for finding in findings(path.read_text(), str(path.relative_to(REPO)))
    ]
    assert problems == []
    # and, plainly, the strings themselves
    for path in package_sources():
        text = path.read_text()
        assert "shell=True" not in text, path
        assert "yaml.load(" not in text.replace("yaml.load(text, Loader=yaml.SafeLoader", ""), path


def test_yaml_is_read_with_the_safe_loader() -> None:
    """The configuration loader builds Python objects only from plain YAML types."""
    text = (PACKAGE / "common" / "yamlfile.py").read_text()
    assert "yaml.SafeLoader(" in text
    assert "yaml.safe_load(" in (PACKAGE / "planning" / "matrix.py").read_text()


def test_report_links_from_data_stay_relative() -> None:
    for hostile in ("javascript:alert(1)", "https://evil.example/x", "//evil.example/x"):
        href = relative_href(f"{hostile}/index.html")
        assert not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", href), href  # no URL scheme
        assert not href.startswith("//"), href


def test_html_templates_are_autoescaped() -> None:
    from orchestrator.reporting.html import render_html  # noqa: F401  (the renderer exists)

    source = (PACKAGE / "reporting" / "html.py").read_text()
    assert "autoescape=select_autoescape(default=True, default_for_string=True)" in source
    template = (PACKAGE / "reporting" / "templates" / "report.html.j2").read_text()
    assert "|safe" not in template.replace(" ", "") and "autoescape false" not in template


# --- the workflows ----------------------------------------------------------------------


def load_workflow(path: Path) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    if True in data:  # YAML 1.1 reads the key `on` as the boolean true
        data["on"] = data.pop(True)
    return data


def triggers(workflow: dict[Any, Any]) -> set[str]:
    on = workflow["on"]
    return {on} if isinstance(on, str) else set(on)


def writes(permissions: object) -> set[str]:
    if permissions in ("write-all",):
        return {"everything"}
    if not isinstance(permissions, dict):
        return set()
    return {scope for scope, level in permissions.items() if level == "write"}


@pytest.fixture(params=WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def workflow(request: pytest.FixtureRequest) -> tuple[Path, dict[Any, Any]]:
    path: Path = request.param
    return path, load_workflow(path)


def test_workflows_exist() -> None:
    assert len(WORKFLOWS) >= 3


def test_workflow_is_read_only_by_default(workflow: tuple[Path, dict[Any, Any]]) -> None:
    _, data = workflow
    assert data["permissions"] == {"contents": "read"}


def test_workflow_never_runs_pull_request_code_with_secrets(
    workflow: tuple[Path, dict[Any, Any]],
) -> None:
    path, data = workflow
    assert "pull_request_target" not in triggers(data)
    assert "workflow_run" not in triggers(data)  # runs with secrets on PR-made artifacts
    text = path.read_text()
    if "pull_request" in triggers(data):
        assert "secrets." not in text and "secrets:" not in text
    # (a reusable workflow receives no secrets unless its caller passes them)
    if "workflow_call" in triggers(data):
        assert "secrets" not in data["on"]["workflow_call"]


def test_write_permissions_only_where_the_report_is_published(
    workflow: tuple[Path, dict[Any, Any]],
) -> None:
    """Job-level write permissions only in the jobs that publish to the pull request
    (report: JUnit checks and comments; compare: its one comment), and only those two
    scopes. A job that calls the reusable workflow must grant what that workflow's
    report job needs (a called workflow cannot get more than its caller job has); then
    every write it grants must reach only the publishing jobs, all other jobs staying
    at the read-only top level."""
    path, data = workflow
    for name, job in data["jobs"].items():
        granted = writes(job.get("permissions"))
        if not granted:
            continue
        if name in PUBLISHING_JOBS:
            assert granted <= {"checks", "pull-requests"}
            continue
        uses = job.get("uses", "")
        assert uses.startswith("./.github/workflows/"), f"{path.name}: job {name} writes"
        called = load_workflow(REPO / uses.removeprefix("./"))
        assert writes(called["permissions"]) == set()
        for called_name, called_job in called["jobs"].items():
            if called_name not in PUBLISHING_JOBS:
                assert not writes(called_job.get("permissions")), called_name
        assert granted <= writes(called["jobs"]["report"]["permissions"])


def steps(data: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in data["jobs"].values() for step in job.get("steps", [])]


def test_every_action_is_pinned_to_a_commit(workflow: tuple[Path, dict[Any, Any]]) -> None:
    _, data = workflow
    uses = [s["uses"] for s in steps(data) if "uses" in s]
    uses += [j["uses"] for j in data["jobs"].values() if "uses" in j]
    for ref in uses:
        if ref.startswith("./"):
            continue  # this repository's own reusable workflow, at the same commit
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), ref


def test_checkouts_do_not_keep_credentials(workflow: tuple[Path, dict[Any, Any]]) -> None:
    _, data = workflow
    for step in steps(data):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False


def test_no_expression_is_pasted_into_a_shell_script(
    workflow: tuple[Path, dict[Any, Any]],
) -> None:
    """``${{ ... }}`` in a ``run:`` script is pasted into the script before bash reads
    it (script injection); values go through ``env:`` instead. (``steps.*.outputs``
    of this workflow's own steps would be the only tolerable exception; there is none.)"""
    _, data = workflow
    for step in steps(data):
        assert "${{" not in step.get("run", ""), step.get("name")


def kernel_matrix_options() -> dict[str, set[str]]:
    """Every verb of the CLI (``baseline save`` as ``baseline``) and its options."""
    parser = build_parser()
    verbs: dict[str, set[str]] = {}
    subparsers = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    for verb, sub in subparsers.choices.items():
        options = {o for a in sub._actions for o in a.option_strings}
        for action in sub._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for child in action.choices.values():
                    options |= {o for a in child._actions for o in a.option_strings}
        verbs[verb] = options
    return verbs


def test_workflows_pass_only_options_that_exist(workflow: tuple[Path, dict[Any, Any]]) -> None:
    """The options given to kernel-matrix in the scripts (``kernel-matrix VERB ...``,
    ``args=(VERB ...)``, ``args+=(...)``) are options of that verb. (The nightly
    report passed ``--html``, which does not exist: its report step ended in exit 2.)"""
    _, data = workflow
    known = kernel_matrix_options()
    checked = 0
    for step in steps(data):
        verb = None
        for line in step.get("run", "").splitlines():
            line = line.strip()
            found = re.search(r"(?:^|\s)kernel-matrix\s+(\w+)|args=\((\w+)", line)
            if found and (found[1] or found[2]) in known:
                verb = found[1] or found[2]
            elif "nox " in line and "-s cell" in line:
                verb = "run"  # nox -s cell -- CELL [run options]
            if verb is None or not re.search(r"kernel-matrix |args\+?=\(", line):
                continue
            for token in shlex.split(line.replace("(", " ").replace(")", " ")):
                if token.startswith("--") and token != "--":
                    assert token in known[verb], f"kernel-matrix {verb} has no {token}: {line}"
                    checked += 1
    if any("kernel-matrix" in s.get("run", "") for s in steps(data)):
        assert checked


def test_build_containers_are_unprivileged_and_run_as_the_invoking_user(tmp_path: Path) -> None:
    """The options themselves are checked against a fake engine in
    test_docker_engine.py; here: the defaults that decide them."""
    import os

    from orchestrator.building.backends.container import Engine
    from orchestrator.building.backends.docker import DockerBackend
    from orchestrator.planning.matrix import load_matrix

    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        f"project: {{source: {REPO / 'examples/sample_ext'}}}\ncuda: ['13.0']\n"
        f"archs: ['9.0a']\nfamilies: {REPO / 'examples/sample_ext/families.yaml'}\n"
    )
    backend = DockerBackend(load_matrix(matrix), engine=Engine.__new__(Engine))
    assert backend.user == (os.getuid(), os.getgid())
    container = (PACKAGE / "building" / "backends" / "container.py").read_text()
    for option in ('"privileged": False', '"cap_drop": ["ALL"]', '"no-new-privileges"'):
        assert option in container
