"""The README's command-line block and Python snippet run as written (point 6), from a folder outside the repo."""
import json
import os
import re
import subprocess
import sys

from conftest import REPO

README = (REPO / "README.md").read_text()


def block(heading: str, language: str) -> str:
    """The first ``language`` code block after ``heading``."""
    section = README[README.index(heading):]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def run(args: list[str], cwd, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "ATTRIBUTION_HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_cli_lines_run_as_written_and_again(tmp_path):
    """The block runs; run a second time (as a reader pasting it again does), every line gives what the README
    says: ``enroll`` the ``not_enrolled`` line with exit status 2 (its head is there already), the rest as before."""
    # `attribution` is the console script of `pip install -e .`; here the same entry point through python -m
    lines = [re.sub(r"^attribution ", f"{sys.executable} -m attribution ", line)
             for line in block("## Command line", "bash").splitlines() if line.strip()]
    script = "set -euo pipefail\n" + "\n".join(lines)
    proc = run(["bash", "-c", script], tmp_path, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"model": "my_generator"' in proc.stdout and "open-set-efficientnet-lite2-with-my_generator" in proc.stdout
    for line in lines:
        again = run(["bash", "-c", line], tmp_path, tmp_path / "home")
        if " enroll " in line:
            assert again.returncode == 2 and json.loads(again.stdout)["error_code"] == "not_enrolled", again.stderr
        else:
            assert again.returncode == 0, (line, again.stderr[-3000:])


def test_python_snippet_runs_as_written(tmp_path):
    proc = run([sys.executable, "-c", block("## Python", "python")], tmp_path, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "my-zoo" / "with-my-generator" / "config.json").is_file()
    assert "false_match_rate_at_score" in proc.stdout


def test_the_readme_opens_with_the_two_commands_that_ci_runs():
    """The first block: ``make app`` and ``make test``; both are Makefile targets (a dry run resolves them), and
    CI runs the second."""
    commands = [line.split("#")[0].strip() for line in block("## Install, run, test", "bash").splitlines()]
    assert [c for c in commands if c] == ["make app", "make test"]
    for target in ("app", "test"):
        dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0 and ("app.py" if target == "app" else "pytest") in dry.stdout, dry.stderr
    assert re.search(r"^make test$", (REPO / ".ci" / "run").read_text(), re.M)
