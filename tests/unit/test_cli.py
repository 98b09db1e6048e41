from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from aichaos.cli.app import app
from tests.conftest import EXPERIMENT, ROOT, STACK

runner = CliRunner()


def test_help_lists_commands_and_exit_codes():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "validate", "init", "schema", "cleanup", "proxy"):
        assert command in result.output
    assert "130 interrupted" in result.output.replace("\n", " ").replace("  ", " ")


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("aichaos ")


def test_help_does_not_import_heavy_modules():
    code = ("import sys, runpy; sys.argv=['aichaos','--help']\n"
            "try:\n  runpy.run_module('aichaos', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in ('torch','locust','docker','gevent','requests','pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_validate_ok_and_bad(write):
    write("stack.yaml", STACK)
    good = write("good.yaml", EXPERIMENT)
    bad = write("bad.yaml", EXPERIMENT.replace("users: 2", "userz: 2"))
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "unit" in result.output
    result = runner.invoke(app, ["validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:" in result.output and "load.userz" in result.output and "did you mean 'users'" in result.output
    assert "Traceback" not in result.output


def test_validate_missing_file(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_init_writes_a_valid_experiment(tmp_path):
    target = tmp_path / "exp.yaml"
    stack = ROOT / "sample_stack" / "stack.yaml"
    result = runner.invoke(app, ["init", str(target), "--stack-path", str(stack)])
    assert result.exit_code == 0, result.output
    assert target.read_text().startswith("# aichaos experiment")
    result = runner.invoke(app, ["validate", str(target)])
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, ["init", str(target)])
    assert again.exit_code == 2 and "exists" in again.output


def test_init_stack_writes_a_stack_that_an_init_experiment_validates_with(tmp_path):
    stack = tmp_path / "stack.yaml"
    result = runner.invoke(app, ["init", str(stack), "--stack"])
    assert result.exit_code == 0, result.output
    assert stack.read_text().startswith("# aichaos stack")
    result = runner.invoke(app, ["init", str(tmp_path / "exp.yaml"), "--stack-path", "stack.yaml",
                                 "--edge", "gateway->model-server"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["validate", str(tmp_path / "exp.yaml")])
    assert result.exit_code == 0, result.output


def test_schema_of_the_stack_format():
    import json

    result = runner.invoke(app, ["schema", "--stack"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "aichaos stack"
    service = schema["$defs"]["Service"]["properties"]
    assert {"ports", "env_file", "workdir", "gpus", "address", "healthcheck"} <= set(service)


def test_schema_prints_json():
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "aichaos experiment"


def test_run_with_invalid_file_exits_2_without_starting_anything(write, tmp_path):
    write("stack.yaml", STACK)
    bad = write("bad.yaml", EXPERIMENT.replace("latency_ms: 100", "latency_ms: -1"))
    result = runner.invoke(app, ["run", str(bad), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "latency_ms" in result.output
    assert not (tmp_path / "runs").exists()


def test_run_rejects_bad_runtime_option(write):
    write("stack.yaml", STACK)
    good = write("good.yaml", EXPERIMENT)
    result = runner.invoke(app, ["run", str(good), "--runtime", "kubernetes"])
    assert result.exit_code == 2 and "--runtime" in result.output


def test_run_rejects_bad_network_option(write):
    write("stack.yaml", STACK)
    good = write("good.yaml", EXPERIMENT)
    result = runner.invoke(app, ["run", str(good), "--network", "bridge"])
    assert result.exit_code == 2 and "--network must be run or host" in result.output
