"""Gin config lookup: packaged bare names from anywhere, explicit paths win, clear misses."""

from __future__ import annotations

import logging
import os

import gin
import pytest

from dlss_dist import config


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_every_shipped_config_is_package_data():
    names = config.packaged_config_names()
    assert {"base.gin", "demo.gin", "tiny_test.gin"} <= set(names)
    folder = config.packaged_configs_dir()
    assert os.path.dirname(folder) == os.path.dirname(os.path.abspath(config.__file__))


def test_a_bare_name_resolves_from_any_working_directory(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        config.parse_config(["tiny_test.gin"])
    assert gin.query_parameter("%SCALE") == 2
    # The included base.gin was found without an error-looking line on the way.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_an_explicit_path_wins_and_its_includes_resolve_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    user = tmp_path / "experiments"
    user.mkdir()
    (user / "mine.gin").write_text("include 'tiny_test.gin'\nSCALE = 4\n")
    config.parse_config([str(user / "mine.gin")])
    assert gin.query_parameter("%SCALE") == 4
    assert gin.query_parameter("%GLOBAL_BATCH_SIZE") == 4  # from the packaged tiny_test.gin

    # A file of the same name in the working directory is used instead of the packaged one.
    (tmp_path / "demo.gin").write_text("include 'base.gin'\nSCALE = 8\n")
    assert config.resolve_gin_file("demo.gin") == "demo.gin"


def test_a_missing_config_names_every_place_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        config.resolve_gin_file("nope.gin")
    message = str(error.value)
    assert str(tmp_path / "nope.gin") in message
    assert os.path.join(config.packaged_configs_dir(), "nope.gin") in message
    assert "base.gin" in message  # the packaged names, to pick from
    # A path with a folder is never redirected to the packaged configs.
    with pytest.raises(FileNotFoundError, match="exp/base.gin"):
        config.resolve_gin_file("exp/base.gin")


# Issue 19 cases 12, 14, 15, 22: gin mistakes are one line naming the binding and its place.


@pytest.mark.parametrize(
    ("binding", "expected"),
    [
        (
            "HR_SIZE = 64",
            "gin macro HR_SIZE is set (--gin_param: HR_SIZE = 64) but nothing uses it; "
            "HR_SIZE was renamed HR_CROP",
        ),
        (
            "hr_crop = 8",
            "gin macro hr_crop is set (--gin_param: hr_crop = 8) but nothing uses it; "
            "did you mean HR_CROP?",
        ),
    ],
)
def test_an_unused_macro_is_an_error(binding, expected):
    with pytest.raises(ValueError) as raised:
        config.parse_config(["tiny_test.gin"], [binding])
    assert str(raised.value).startswith(expected), raised.value


def test_an_unused_macro_in_a_file_names_the_file_and_line(tmp_path):
    mine = tmp_path / "mine.gin"
    mine.write_text("include 'tiny_test.gin'\n\nhr_crop = 8   # meant HR_CROP\n")
    with pytest.raises(ValueError, match=rf"hr_crop is set \({mine} line 3: hr_crop = 8"):
        config.parse_config([str(mine)])


@pytest.mark.parametrize(
    ("binding", "name", "kind"),
    [
        (
            "generator/make_optimizer.learning_rate = 'fast'",
            "generator/make_optimizer.learning_rate",
            "a number",
        ),
        ("Trainer.adversarial_weight = None", "Trainer.adversarial_weight", "a number"),
        ("make_input_fn.shuffle_buffer = 'big'", "make_input_fn.shuffle_buffer", "an integer"),
        ("HR_CROP = 'x'", "make_input_fn.hr_patch_size", "an integer"),
    ],
)
def test_a_string_or_none_for_a_number_names_the_binding(binding, name, kind):
    with pytest.raises(ValueError) as raised:
        config.parse_config(["tiny_test.gin"], [binding])
    message = str(raised.value)
    assert message.startswith(f"gin binding {name} = "), message
    assert f"must be {kind}" in message and "\n" not in message, message
    if binding.startswith("HR_CROP"):
        assert "through macro HR_CROP (--gin_param: HR_CROP = 'x')" in message


def test_none_is_fine_where_the_parameter_allows_it():
    config.parse_config(["tiny_test.gin"], ["train_loop.ema_decay = None"])
    assert gin.query_parameter("train_loop.ema_decay") is None


def test_every_shipped_config_parses_with_the_checks():
    for name in config.packaged_config_names():
        gin.clear_config()
        config.parse_config([name])


def test_an_undefined_macro_is_a_short_error_with_file_and_line(tmp_path):
    mine = tmp_path / "mine.gin"
    mine.write_text("include 'tiny_test.gin'\ntrain_loop.total_steps = %TOTAL_STEPS\n")
    with pytest.raises(ValueError) as raised:
        config.parse_config([str(mine)])
    message = str(raised.value)
    assert message.startswith(
        f"gin macro %TOTAL_STEPS is used ({mine} line 2: train_loop.total_steps = %TOTAL_STEPS)"
        " but never set"
    ), message
    assert len(message) < 300 and "\n" not in message


def test_an_import_of_a_missing_module_is_a_value_error_naming_the_line(tmp_path):
    mine = tmp_path / "mine.gin"
    mine.write_text("include 'tiny_test.gin'\nimport dlss_dist.no_such_module\n")
    with pytest.raises(ValueError) as raised:
        config.parse_config([str(mine)])
    message = str(raised.value)
    assert message.startswith(f"gin {mine} line 2: import dlss_dist.no_such_module failed: "), (
        message
    )
    assert "No module named 'dlss_dist.no_such_module'" in message


@pytest.mark.parametrize(
    ("binding", "message"),
    [
        (
            "make_input_fn.online_degradation = None",
            r"make_input_fn\.online_degradation \(--gin_param: .*\) has moved .*rename it to "
            r"train_loop\.online_degradation",
        ),
        ("make_input_fn.scale = 2", r"make_input_fn\.scale .* has moved .*remove the binding"),
        (
            "make_input_fn.global_batch_size = 4",
            r"make_input_fn\.global_batch_size .* has moved .*train_loop\.global_batch_size",
        ),
    ],
)
def test_a_moved_binding_names_its_new_home(binding, message):
    with pytest.raises(ValueError, match=message):
        config.parse_config(["tiny_test.gin"], [binding])


def test_an_old_operative_config_is_read_with_moved_bindings_renamed():
    old = (
        "make_input_fn.global_batch_size = %GLOBAL_BATCH_SIZE\n"
        "make_input_fn.hr_patch_size = %HR_CROP\n"
        "make_input_fn.online_degradation = @RealWorldDegradation()\n"
        "make_input_fn.scale = %SCALE\n"
        "make_input_fn.seed = 0\n"
    )
    assert config.upgrade_operative_config(old) == (
        "\n"
        "make_input_fn.hr_patch_size = %HR_CROP\n"
        "train_loop.online_degradation = @RealWorldDegradation()\n"
        "\n"
        "make_input_fn.seed = 0\n"
    )
