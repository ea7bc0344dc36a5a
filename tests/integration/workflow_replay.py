"""Replay a GitHub Actions workflow of this repository on this machine.

GitHub is not reachable here, so the workflow's logic is exercised by running its
own ``run:`` scripts, job by job, in bash, with GitHub's environment files
(``GITHUB_OUTPUT``, ``GITHUB_STEP_SUMMARY``), its ``${{ }}`` expressions evaluated,
and the few ``uses:`` actions it calls emulated on local folders: checkout (the
repository), setup-python and cache (nothing to do: the test's Python is used),
upload/download-artifact (a local artifact store), and the publish action (the
JUnit file must exist and parse). Lines that reinstall kernel-matrix with pip are
skipped: the test's environment already has it. A fake ``gh`` serves the baseline
artifact of an earlier (replayed) nightly run, and keeps the pull-request comments
that ``gh api`` writes in ``.gh-comments`` (one file per comment id).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")
SKIPPED_LINE = re.compile(r"^\s*python -m pip install --quiet \./\.kernel-matrix\s*$", re.M)


@dataclass
class Replay:
    repo: Path
    workspace: Path
    artifacts: Path  # the run's artifact store: one folder per artifact name
    inputs: dict[str, Any]
    previous_runs: Path | None = None  # artifact stores of earlier runs, for `gh`
    log: list[str] = field(default_factory=list)

    def expression(self, text: str, context: dict[str, Any]) -> str:
        def value(expr: str) -> str:
            for alternative in (a.strip() for a in expr.split("||")):
                if "&&" in alternative:  # `cond && 'value'`
                    guard, _, last = alternative.rpartition("&&")
                    found = (
                        self._lookup(last.strip(), context)
                        if self.condition(guard, context)
                        else None
                    )
                else:
                    found = self._lookup(alternative, context)
                if found not in (None, "", False):
                    return str(found)
            return ""

        return EXPRESSION.sub(lambda m: value(m.group(1)), text)

    def _lookup(self, expr: str, context: dict[str, Any]) -> Any:
        if expr.startswith("'") and expr.endswith("'"):
            return expr[1:-1]
        if expr.startswith("hashFiles("):  # (a cache key: no cache here)
            return "replay"
        if " == " in expr or " != " in expr or "(" in expr:
            raise ValueError(f"replay cannot evaluate the expression {expr!r}")
        node: Any = context
        for part in expr.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"replay: unknown expression {expr!r}")
            node = node[part]
        return node

    # -- jobs ---------------------------------------------------------------------------

    def run_job(
        self, job: dict[str, Any], context: dict[str, Any], env: dict[str, str]
    ) -> dict[str, str]:
        """Run a job's steps in order; returns its step outputs by step id. A failing
        step stops the job (like GitHub) and is reported in the return value."""
        outputs: dict[str, dict[str, str]] = {}
        context = {**context, "steps": {}}
        job_env = {
            **env,
            **{k: self.expression(str(v), context) for k, v in job.get("env", {}).items()},
        }
        failed = False
        for step in job["steps"]:
            if failed and "always()" not in str(step.get("if", "")):
                continue
            context["steps"] = {k: {"outputs": v} for k, v in outputs.items()}
            step_env = {
                **job_env,
                **{k: self.expression(str(v), context) for k, v in step.get("env", {}).items()},
            }
            if "if" in step and not self.condition(step["if"], context):
                continue
            if "uses" in step:
                self._action(step, context)
                continue
            script = SKIPPED_LINE.sub("true", self.expression(step["run"], context))
            output_file = self.workspace / ".github_output"
            output_file.write_text("")
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", script],
                cwd=self.workspace,
                env={
                    **step_env,
                    "GITHUB_OUTPUT": str(output_file),
                    "GITHUB_STEP_SUMMARY": str(self.workspace / "step_summary.md"),
                    "GITHUB_WORKSPACE": str(self.workspace),
                },
                capture_output=True,
                text=True,
                timeout=1800,
            )
            self.log.append(
                f"--- {step.get('name', 'step')} (exit {done.returncode})\n{done.stdout}{done.stderr}"
            )
            if "id" in step:
                outputs[step["id"]] = dict(
                    line.split("=", 1)
                    for line in output_file.read_text().splitlines()
                    if "=" in line
                )
            if done.returncode != 0:
                failed = True
                outputs.setdefault("__failed__", {})["step"] = step.get("name", "")
        return {k: json.dumps(v) for k, v in outputs.items()}

    def condition(self, text: str, context: dict[str, Any]) -> bool:
        """The subset of GitHub's condition language these workflows use: terms
        joined by ``&&``; a term is ``always()``, ``hashFiles('p') != ''``,
        ``A == B``/``A != B`` (lookups or quoted literals) or a bare lookup."""
        result = True
        for term in (t.strip() for t in text.split("&&")):
            if term in ("always()", "success()"):
                continue
            match = re.fullmatch(r"hashFiles\('([^']+)'\) != ''", term)
            if match:
                result &= any(self.workspace.glob(match[1]))
                continue
            match = re.fullmatch(r"(.+?) (==|!=) (.+)", term)
            if match:
                left, right = (str(self._lookup(x.strip(), context)) for x in (match[1], match[3]))
                result &= (left == right) == (match[2] == "==")
                continue
            result &= bool(self._lookup(term, context))
        return result

    # -- actions --------------------------------------------------------------------------

    def _action(self, step: dict[str, Any], context: dict[str, Any]) -> None:
        action = step["uses"].split("@")[0]
        spec = {k: self.expression(str(v), context) for k, v in step.get("with", {}).items()}
        if action == "actions/checkout":
            target = self.workspace / spec.get("path", ".")
            if spec.get("path") and not target.exists():
                target.symlink_to(self.repo)
        elif action in ("actions/setup-python", "actions/cache"):
            pass
        elif action == "actions/upload-artifact":
            store = self.artifacts / spec["name"]
            for pattern in (p.strip() for p in spec["path"].splitlines() if p.strip()):
                for source in self.workspace.glob(pattern):
                    rel = source.relative_to(self.workspace)
                    if source.is_dir():
                        shutil.copytree(source, store / rel, dirs_exist_ok=True)
                    else:
                        (store / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(source, store / rel)
        elif action == "actions/download-artifact":
            for store in sorted(self.artifacts.iterdir()):
                if fnmatch.fnmatch(store.name, spec["pattern"]):
                    shutil.copytree(
                        store, self.workspace / spec["path"] / store.name, dirs_exist_ok=True
                    )
        elif action == "EnricoMi/publish-unit-test-result-action":
            junit = self.workspace / spec["files"]
            if junit.is_file():
                import xml.etree.ElementTree as ET

                ET.parse(junit)  # noqa: S314 -- our own file; the action needs it to parse
        else:
            raise ValueError(f"replay has no emulation for {action}")

    def fake_gh(self) -> Path:
        """A ``gh`` that knows one earlier successful run: the previous replay."""
        bindir = self.workspace / ".fake-bin"
        bindir.mkdir(exist_ok=True)
        gh = bindir / "gh"
        store = self.previous_runs or self.workspace / ".no-previous-run"
        gh.write_text(
            "#!/usr/bin/env bash\n"
            f"store={store}\n"
            'if [ "$1 $2" = "run list" ]; then [ -d "$store" ] && echo 1; exit 0; fi\n'
            'if [ "$1 $2" = "run download" ]; then\n'
            '  name=""; dir=.; while [ $# -gt 0 ]; do case "$1" in --name) name=$2; shift;; --dir) dir=$2; shift;; esac; shift; done\n'
            '  [ -d "$store/$name" ] || exit 1; mkdir -p "$dir"; cp -r "$store/$name"/. "$dir"/; exit 0\n'
            "fi\n"
            # gh api: comments of one pull request, kept as files (id = file name)
            f"comments={self.workspace / '.gh-comments'}\n"
            'if [ "$1" = api ]; then\n'
            '  mkdir -p "$comments"; method=GET; body=""\n'
            '  for a in "$@"; do case "$a" in POST|PATCH) method=$a;; body=@*) body=${a#body=@};; esac; done\n'
            '  case "$method" in\n'
            '    POST) n=$(( $(ls "$comments" | wc -l) + 1 )); cp "$body" "$comments/$n"; echo "{\\"id\\": $n}";;\n'
            '    PATCH) n=$(printf "%s\\n" "$@" | grep -o "comments/[0-9]*" | head -1); cp "$body" "$comments/${n#comments/}";;\n'
            '    GET) for f in "$comments"/*; do [ -f "$f" ] && head -1 "$f" | grep -q "kernel-matrix compare" && { basename "$f"; break; }; done;;\n'
            "  esac; exit 0\n"
            "fi\nexit 1\n"
        )
        gh.chmod(0o755)
        return bindir


def replay_workflow(
    repo: Path, workspace: Path, inputs: dict[str, Any], previous_runs: Path | None = None
) -> tuple[Replay, dict[str, Any]]:
    """Run plan -> build (one job per matrix entry) -> report of the reusable
    workflow. Returns the replay (with its log) and each job's step outputs."""
    workflow = yaml.safe_load((repo / ".github/workflows/kernel-matrix-reusable.yml").read_text())
    defaults = {
        k: v.get("default", "") for k, v in workflow[True]["workflow_call"]["inputs"].items()
    }
    inputs = {**defaults, **inputs}
    replay = Replay(repo, workspace, workspace / ".artifacts", inputs, previous_runs)
    replay.artifacts.mkdir(parents=True, exist_ok=True)
    bindir = replay.fake_gh()
    context: dict[str, Any] = {
        "inputs": inputs,
        "github": {
            "workspace": str(workspace),
            "repository": "example/kernel-matrix",
            "sha": "0" * 40,
            "run_id": "1",
            "token": "replay",
            "event": {"repository": {"default_branch": "main"}},
        },
        "runner": {"os": "Linux"},
    }
    base_env = {
        **os.environ,
        "PATH": os.pathsep.join(
            [str(bindir), str(Path(sys.executable).parent), os.environ["PATH"]]
        ),
        "CI": "true",
    }
    env = {
        **base_env,
        **{k: replay.expression(str(v), context) for k, v in workflow["env"].items()},
    }
    jobs = workflow["jobs"]
    results: dict[str, Any] = {}

    assert replay.condition(
        jobs["report"]["if"], {**context, "needs": {"plan": {"result": "success"}}}
    )
    plan = replay.run_job(jobs["plan"], context, env)
    plan_outputs = json.loads(plan["plan"])
    results["plan"] = plan_outputs
    context["needs"] = {"plan": {"outputs": plan_outputs, "result": "success"}}
    matrix = json.loads(plan_outputs["matrix"])
    results["build"] = []
    if not replay.condition(jobs["build"]["if"], context):
        matrix["include"] = []
    for entry in matrix["include"]:
        results["build"].append(replay.run_job(jobs["build"], {**context, "matrix": entry}, env))
    report = replay.run_job(jobs["report"], context, env)
    results["report"] = {k: json.loads(v) for k, v in report.items()}
    return replay, results


def replay_compare(
    repo: Path, workspace: Path, inputs: dict[str, Any], event: dict[str, Any]
) -> tuple[Replay, dict[str, Any]]:
    """Run the ``compare`` job of the reusable workflow (``inputs`` with a ``base-ref``)
    in ``workspace``, a git checkout of the caller's repository, for ``event`` (a
    pull_request event's payload). Returns the replay and the job's step outputs."""
    workflow = yaml.safe_load((repo / ".github/workflows/kernel-matrix-reusable.yml").read_text())
    defaults = {
        k: v.get("default", "") for k, v in workflow[True]["workflow_call"]["inputs"].items()
    }
    inputs = {**defaults, **inputs}
    replay = Replay(repo, workspace, workspace / ".artifacts", inputs)
    replay.artifacts.mkdir(parents=True, exist_ok=True)
    bindir = replay.fake_gh()
    context: dict[str, Any] = {
        "inputs": inputs,
        "github": {
            "workspace": str(workspace),
            "repository": "example/vllm",
            "sha": "0" * 40,
            "run_id": "1",
            "token": "replay",
            "event_name": "pull_request",
            "event": event,
        },
        "runner": {"os": "Linux"},
    }
    env = {
        **os.environ,
        "PATH": os.pathsep.join(
            [str(bindir), str(Path(sys.executable).parent), os.environ["PATH"]]
        ),
        "CI": "true",
    }
    env.update({k: replay.expression(str(v), context) for k, v in workflow["env"].items()})
    jobs = workflow["jobs"]
    assert not replay.condition(jobs["plan"]["if"], context)  # no plan/cells/report then
    assert replay.condition(jobs["compare"]["if"], context)
    outputs = replay.run_job(jobs["compare"], context, env)
    return replay, {k: json.loads(v) for k, v in outputs.items()}
