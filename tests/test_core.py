"""mmgeolm_core: the config builder, the io helpers and the one CLI error path, on their own."""
import argparse
import errno
import math
from dataclasses import dataclass, field
from typing import Literal

import pytest

from mmgeolm_core.cli import guarded, run_cli
from mmgeolm_core.config import (
    ConfigError,
    build_config,
    check_number,
    internal_field,
    load_yaml_mapping,
    parse_overrides,
    parse_yaml,
)
from mmgeolm_core.errors import InputError, JobError
from mmgeolm_core.io import FormatError, atomic_directory, atomic_write_with, read_text, unique_name


@dataclass
class Inner:
    lr: float = 1e-3
    kind: Literal["a", "b"] = "a"

    def __post_init__(self):
        check_number(self.lr, "lr", gt=0)


@dataclass
class Outer:
    steps: int = 1
    on: bool = True
    pair: tuple[str, float] = ("x", 1.0)
    names: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    source: str = internal_field("<here>")


@pytest.mark.parametrize("data, message", [
    ({"steps": "10"}, "f.yaml: key 'steps': expected an integer, got '10'"),
    ({"steps": True}, "key 'steps': expected an integer, got True"),
    ({"on": "false"}, "key 'on': expected true or false, got 'false'"),
    ({"inner": {"lr": math.nan}}, "key 'inner.lr': expected a finite number, got nan"),
    ({"inner": {"lr": -1}}, "f.yaml: key 'inner.lr': expected a number > 0, got -1.0"),
    ({"inner": {"kind": "c"}}, "key 'inner.kind': expected one of ['a', 'b'], got 'c'"),
    ({"inner": 3}, "key 'inner': expected a mapping of keys, got 3"),
    ({"inner": {"lrr": 1}}, "key 'inner.lrr': unknown key; valid keys under 'inner': kind, lr"),
    ({"pair": ["x"]}, "key 'pair': expected a list of 2 items"),
    ({"names": ["a", 2]}, "key 'names[1]': expected a string, got 2"),
    ({"source": "elsewhere"}, "key 'source': unknown key"),  # set by code, never by a file
])
def test_build_config_names_file_key_value_and_expectation(data, message):
    with pytest.raises(ConfigError) as err:
        build_config(Outer, data, "f.yaml")
    assert message in str(err.value)


def test_build_config_converts_and_fills_internal_fields():
    cfg = build_config(Outer, {"steps": 3, "inner": {"lr": "1e-4"}, "pair": ["y", 2]}, "f", internal={"source": "f"})
    assert cfg.inner.lr == 1e-4 and cfg.pair == ("y", 2.0) and cfg.source == "f"


def test_yaml_edge_refuses_duplicates_empty_files_and_bad_overrides(tmp_path):
    with pytest.raises(ConfigError, match=r"line 2: not valid YAML: .*duplicate key 'a'"):
        parse_yaml("a: 1\na: 2\n", "x.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="empty.yaml: the recipe is empty"):
        load_yaml_mapping(tmp_path / "empty.yaml", "recipe")
    with pytest.raises(ConfigError, match="override 'optim.lr=\\[1': line 1: not valid YAML"):
        parse_overrides(["optim.lr=[1"])
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_atomic_directory_keeps_the_old_one_when_writing_fails(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("crash while writing")
    assert (target / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_read_text_names_the_line_of_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes("ok\nstill ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(FormatError, match=r"f.txt: line 3: not UTF-8"):
        read_text(path)


def test_unique_name():
    used: set[str] = set()
    assert [unique_name(r, used) for r in ["a b", "a b", "..", "é/x"]] == ["a_b", "a_b_2", "item", "x"]


@pytest.mark.parametrize("exc, status, words", [
    (InputError("bad.json: line 3: key 'x': expected a string"), 2, "prog: bad.json: line 3: key 'x'"),
    (JobError("stage 'data' failed"), 1, "prog: stage 'data' failed"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/nope"), 2, "prog: /nope: No such file"),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/out"), 2, "prog: /ro/out: Permission denied"),
    (OSError(errno.ENOSPC, "No space left on device", "/full"), 1, "prog: /full: No space left"),
    (KeyboardInterrupt(), 130, "prog: interrupted"),
])
def test_guarded_maps_expected_failures_to_one_line_and_a_status(capsys, exc, status, words):
    def fail():
        raise exc

    assert guarded("prog", fail) == status
    err = capsys.readouterr().err
    assert err.startswith(words) and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_guarded_keeps_the_traceback_of_a_bug_and_debug_shows_expected_ones(capsys):
    with pytest.raises(ZeroDivisionError):
        guarded("prog", lambda: 1 / 0)
    parser = argparse.ArgumentParser()

    def run(args):
        raise InputError("bad")

    assert run_cli("prog", parser, run, ["--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    (tmp_path / "x.txt").write_text("old")
    def half_then_crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        atomic_write_with(tmp_path / "x.txt", half_then_crash)
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"] and (tmp_path / "x.txt").read_text() == "old"
