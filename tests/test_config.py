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
