"""The one tool shell (dlss_dist.cli.run_tool) for every CLI, dlss-preprocess included: flags
built from the typed options, --version, exit codes, old flag names as deprecated aliases.

In-process (fast) unless marked slow: each test runs a tool's `run(argv)` in this process.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
import yaml
from absl import flags

from beam_jobs.images_to_tfrecords import cli as preprocess_cli
from beam_jobs.images_to_tfrecords.options import SOURCE_FOLDERS, JobOptions
from dlss_dist import cli as shell

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
# tool -> module whose run(argv) is its console script
TOOLS = {
    "dlss-train": "dlss_dist.cli.train",
    "dlss-export": "dlss_dist.cli.export",
    "dlss-eval": "dlss_dist.cli.evaluate",
    "dlss-upscale": "dlss_dist.cli.upscale",
    "dlss-demo": "dlss_dist.cli.demo",
    "dlss-verify": "dlss_dist.cli.verify",
    "dlss-photos": "dlss_dist.cli.photos",
    "dlss-weights": "dlss_dist.cli.weights",
    "dlss-preprocess": "beam_jobs.images_to_tfrecords.cli",
}


def run_tool(module: str, argv: list[str]) -> int:
    """A tool's console script in this process: its exit status."""
    with pytest.raises(SystemExit) as info:
        importlib.import_module(module).run(argv)
    code = info.value.code
    return 0 if code is None else code


def error_lines(text: str, tool: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"{tool}: error: ")]


@pytest.mark.parametrize("tool", list(TOOLS))
def test_version_on_every_tool(tool, capsys):
    assert run_tool(TOOLS[tool], ["--version"]) == 0
    out = capsys.readouterr().out
    assert out == f"{tool} {shell.package_version()}\n"
    assert shell.package_version() not in ("", "unknown")  # the editable install's metadata


@pytest.mark.slow
def test_version_and_help_import_neither_tensorflow_nor_beam():
    """Every tool answers --version and --help with TensorFlow and Beam unimportable."""
    script = textwrap.dedent(
        f"""
        import importlib, io, sys, contextlib
        sys.modules["tensorflow"] = None
        sys.modules["apache_beam"] = None
        for tool, module in {TOOLS!r}.items():
            for flag in ("--version", "--help"):
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    try:
                        importlib.import_module(module).run([flag])
                    except SystemExit as exit_:
                        status = exit_.code
                print(tool, flag, status, out.getvalue().splitlines()[0])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 2 * len(TOOLS), result.stdout + result.stderr[-2000:]
    for tool in TOOLS:
        assert f"{tool} --version 0 {tool} {shell.package_version()}" in lines
        assert any(line.startswith(f"{tool} --help 0 {tool}: ") for line in lines), tool


# -- dlss-preprocess: flags from JobOptions, Beam's options through ------------------------


def test_preprocess_flags_are_built_from_the_typed_options():
    fields = [f for f in dataclasses.fields(JobOptions) if "help" in f.metadata]
    assert {f.name for f in fields} >= {"source", "output_dir", "scale", "hr_size", "overwrite"}
    for field in fields:
        flag = FLAGS[field.name]
        default = None if field.default is dataclasses.MISSING else field.default
        assert flag.default == default, field.name
        if FLAGS.find_module_defining_flag(field.name) == preprocess_cli.__name__:
            # (a flag several tools share has the help of the first tool imported)
            assert flag.help.endswith(field.metadata["help"]), field.name
    assert sorted(FLAGS["source"].parser.enum_values) == sorted(SOURCE_FOLDERS)
    for folders in SOURCE_FOLDERS.values():
        for name in folders:
            assert name in FLAGS
    key_flags = {f.name for f in FLAGS.get_key_flags_for_module(preprocess_cli.__name__)}
    # (--debug joins them when run_tool starts the tool: the --help tests check it)
    assert {f.name for f in fields} <= key_flags


def test_parse_options_passes_beam_options_through():
    options = preprocess_cli.parse_options(
        [
            "--source=paired",
            "--lr_dir=lr",
            "--hr_dir=hr",
            "--output_dir=out",
            "--split_ratios=1,0,0",
            "--num_shards=3",
            "--runner",
            "DirectRunner",
            "--direct_num_workers=2",
        ]
    )
    assert options == JobOptions(
        source="paired",
        inputs={"lr_dir": "lr", "hr_dir": "hr"},
        output_dir="out",
        split_ratios=(1.0, 0.0, 0.0),
        num_shards=3,
        beam_args=("--runner", "DirectRunner", "--direct_num_workers=2"),
    )


def _preprocess_command_lines() -> list[list[str]]:
    """Every dlss-preprocess command line of the k8s manifests and the Makefile."""
    found = []
    for path in sorted((REPO / "k8s").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            text = repr(document)
            if "dlss-preprocess" not in text or not isinstance(document, dict):
                continue
            spec = document.get("spec", {})
            containers = spec.get("template", {}).get("spec", {}).get("containers", [])
            for container in containers:
                if container.get("command") == ["dlss-preprocess"]:
                    found.append(container["args"])
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    for line in makefile.splitlines():
        if "dlss-preprocess " in line:
            words = line.split("dlss-preprocess", 1)[1].split()
            found.append([w.replace("$(RW)", "rw") for w in words])
    return found


def test_every_shipped_command_line_parses():
    command_lines = _preprocess_command_lines()
    assert len(command_lines) >= 2  # the base Job and `make realworld`
    for argv in command_lines:
        options = preprocess_cli.parse_options(argv)
        assert options.output_dir, argv
        assert all(arg.startswith("--direct_") for arg in options.beam_args), argv


@pytest.mark.parametrize(
    "argv, exit_code, message",
    [
        (["--source=fold"], 2, "--source=fold: value should be one of"),
        (["--source=folder", "--output_dir=o", "--scale=x"], 2, "--scale=x"),
        (["--source=folder", "--output_dir=o", "--split_ratios=1,2"], 2, "3 comma-separated"),
        (["--source=folder", "--input_dir=i", "--output_dir=o", "--bogus=1"], 2, "--bogus=1"),
        (["--source=folder", "--input_dir=i", "--output_dir=o", "stray"], 2, "stray"),
        (["--source=folder", "--output_dir=o"], 2, "--source=folder needs --input_dir"),
        (["--source=folder", "--input_dir={missing}", "--output_dir=o"], 1, "does not exist"),
    ],
)
def test_preprocess_errors_are_one_line_with_the_shared_exit_codes(
    argv, exit_code, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(missing=tmp_path / "missing") for a in argv]
    assert run_tool(TOOLS["dlss-preprocess"], argv) == exit_code
    err = capsys.readouterr().err
    (line,) = error_lines(err, "dlss-preprocess")
    assert message in line, err
    assert "Traceback" not in err and "usage:" not in err.lower(), err
    assert not (tmp_path / "o").exists()


def test_preprocess_debug_shows_the_traceback(tmp_path, capsys):
    argv = ["--source=folder", f"--input_dir={tmp_path / 'missing'}", f"--output_dir={tmp_path}"]
    assert run_tool(TOOLS["dlss-preprocess"], [*argv, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and len(error_lines(err, "dlss-preprocess")) == 1


def test_another_tools_required_flags_do_not_apply(tmp_path, capsys):
    """A process that imported dlss-eval (--model required) still runs dlss-preprocess."""
    importlib.import_module(TOOLS["dlss-eval"])
    argv = ["--source=folder", f"--input_dir={tmp_path / 'missing'}", f"--output_dir={tmp_path}"]
    assert run_tool(TOOLS["dlss-preprocess"], argv) == 1
    (line,) = error_lines(capsys.readouterr().err, "dlss-preprocess")
    assert "does not exist" in line and "--model" not in line


# -- old flag names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tool, argv, new_flag, value, old_flag",
    [
        ("dlss-train", ["--gin_file=g", "--model_dir=m", "--data_dir=d"], "data", "d", "data_dir"),
        ("dlss-export", ["--model_dir=m", "--export_dir=e"], "model", "m", "model_dir"),
        (
            "dlss-export",
            ["--model=m", "--export_dir=e", "--version=7"],
            "export_version",
            7,
            "version",
        ),
        (
            "dlss-export",
            ["--model=m", "--export_dir=e", "--version", "7"],
            "export_version",
            7,
            "version",
        ),
    ],
)
def test_old_flag_names_still_work_and_warn_once(
    tool, argv, new_flag, value, old_flag, monkeypatch, capsys
):
    module = importlib.import_module(TOOLS[tool])
    seen = {}
    monkeypatch.setattr(module, "main", lambda _: seen.update(value=getattr(FLAGS, new_flag)))
    assert run_tool(TOOLS[tool], argv) == 0
    assert seen == {"value": value}
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"{tool}: warning: --{old_flag} is deprecated, use --{new_flag} "
        "(the old name will be removed in the next release)"
    ]


def test_old_and_new_name_together_is_a_usage_error(monkeypatch, capsys):
    module = importlib.import_module(TOOLS["dlss-train"])
    monkeypatch.setattr(module, "main", lambda _: None)
    argv = ["--gin_file=g", "--model_dir=m", "--data=a", "--data_dir=b"]
    assert run_tool(TOOLS["dlss-train"], argv) == 2
    (line,) = error_lines(capsys.readouterr().err, "dlss-train")
    assert "--data_dir is the old name of --data: give --data only" in line


@pytest.mark.parametrize("tool", list(TOOLS))
def test_help_lists_debug_and_verbosity(tool, capsys):
    assert run_tool(TOOLS[tool], ["--help"]) == 0
    out = capsys.readouterr().out
    assert "--[no]debug:" in out and "--verbosity:" in out and "--helpfull" in out


def test_help_names_the_old_flags(capsys):
    assert run_tool(TOOLS["dlss-export"], ["--help"]) == 0
    out = capsys.readouterr().out
    assert "--model_dir (now --model)" in out and "--version (now --export_version)" in out
    assert "--export_version:" in out


def _documented_commands() -> list[tuple[str, str, list[str]]]:
    """(page, tool, --flags) of every ``dlss-<tool> ...`` command line in README and docs/."""
    found = []
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "Makefile"]
    for page in pages:
        text = page.read_text().replace("\\\n", " ")
        for match in re.finditer(r"(?:^|[\s`(/])(dlss-[a-z]+) ((?:--?[a-z_]+[^\s`]*\s*)+)", text):
            tool, rest = match.group(1), match.group(2)
            if tool not in TOOLS:
                continue
            names = re.findall(r"(?:^|\s)--?([a-z_]+)", rest)
            found.append((page.name, tool, names))
    return found


def test_documented_command_lines_use_each_tools_current_flag_names():
    """Docs and the Makefile use the new names (the old ones only where they are explained)."""
    commands = _documented_commands()
    assert len(commands) > 20
    absl_ok = {"help", "helpfull", "version", "verbosity", "v", "debug", "nodownload"}
    wrong = []
    for page, tool, names in commands:
        module = importlib.import_module(TOOLS[tool])
        own = {f.name for f in FLAGS.get_key_flags_for_module(module.__name__)}
        for name in names:
            bare = name[2:] if name.startswith("no") and name[2:] in own else name
            if bare in own or bare in absl_ok:
                continue
            if tool == "dlss-preprocess" and not preprocess_cli.unknown_beam_args([f"--{name}=1"]):
                continue  # a Beam pipeline option
            wrong.append(f"{page}: {tool} --{name}")
    assert not wrong, wrong


def test_another_tools_checks_on_a_shared_flag_are_set_aside(in_process, tmp_path):
    """dlss-train's "at least one --gin_file" and dlss-eval's --tile check (with its fixed
    overlap) guard flags dlss-demo and dlss-upscale share: imported into one process, they must
    not judge the other tool's command line (a CI run failed on exactly these two)."""
    import importlib

    for tool in ("train", "evaluate", "demo", "upscale"):
        importlib.import_module(f"dlss_dist.cli.{tool}")
    demo = in_process(
        "demo", f"--output_dir={tmp_path / 'demo'}", "--gin_param=train_loop.total_stepz = 1"
    )
    assert demo.returncode == 1, demo.stderr
    assert "total_stepz" in demo.stderr and "--gin_file" not in demo.stderr
    upscale = in_process(
        "upscale",
        f"--model={tmp_path / 'no_model'}",
        "--tile=24",
        "--tile_overlap=4",
        f"--input={tmp_path / 'no.png'}",
        f"--output={tmp_path / 'out'}",
    )
    assert upscale.returncode == 1, upscale.stderr
    assert "--tile" not in upscale.stderr


def test_the_max_memory_flag_default_is_the_upscalers():
    # The flag spells the default out (parsing flags must not import serving/); they must agree.
    from absl import flags

    from dlss_dist.cli import upscale  # noqa: F401  (defines --max_memory)
    from dlss_dist.serving import memory

    default = flags.FLAGS["max_memory"].default
    assert memory.parse_memory(default) == memory.DEFAULT_MAX_MEMORY
