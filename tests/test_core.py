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
from mmgeolm_core.errors import InputError, Interrupted, JobError
from mmgeolm_core.io import (
    FormatError,
    atomic_directory,
    atomic_write_with,
    check_model_path,
    check_output_dir,
    check_output_file,
    check_replaceable_dir,
    read_text,
    unique_name,
)


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
    # issue 19: a job that says what it kept; a read-only file system is the user's path, not a failed job;
    # an atomic write's temporary file is not named, the target is
    (Interrupted("stopped after step 4 of 9; continue with --resume latest"), 130,
     "prog: interrupted: stopped after step 4 of 9; continue with --resume latest"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out"), 2, "prog: /mnt/ro/out: Read-only file system"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/d/.eval.json.x1.tmp", None, "/d/eval.json"), 2,
     "prog: /d/eval.json: is a directory (expected a file)"),
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


def test_output_paths_are_checked_before_any_work_and_nothing_is_created(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    for check, path, words in [
        (check_output_file, tmp_path / "folder", "is a directory; expected a file name"),
        (check_output_file, tmp_path / "notes.txt" / "x.json", "notes.txt is a file, not a directory"),
        (check_output_dir, tmp_path / "notes.txt", "is a file; expected a directory"),
        (check_output_dir, tmp_path / "notes.txt" / "sub", "notes.txt is a file, not a directory"),
    ]:
        with pytest.raises(InputError, match=words):
            check(path, "--out")
    assert check_output_file(tmp_path / "new" / "deeper" / "x.json") and check_output_dir(tmp_path / "new" / "dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "notes.txt"]  # nothing created


def test_replaceable_dir_is_empty_or_ours_and_never_someone_elses(tmp_path):
    ours = tmp_path / "ours"
    (ours / "MARK").parent.mkdir()
    (ours / "MARK").write_text("")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("x")
    (tmp_path / "empty").mkdir()

    def check(path, overwrite):
        return check_replaceable_dir(path, option="--out", what="our output", overwrite=overwrite,
                                     is_ours=lambda p: (p / "MARK").is_file())

    assert check(tmp_path / "empty", False) and check(ours, True) and check(ours, None)
    with pytest.raises(InputError, match="exists and holds our output; pass --overwrite"):
        check(ours, False)
    for overwrite in (True, None):
        with pytest.raises(InputError, match="holds files that are not our output; it is never replaced"):
            check(tmp_path / "theirs", overwrite)


def test_model_path_is_a_directory_or_a_hub_id(tmp_path):
    (tmp_path / "f").write_text("x")
    check_model_path(str(tmp_path))
    check_model_path("liuhaotian/llava-v1.5-7b")  # a hub id is left to the hub
    with pytest.raises(InputError, match="no such directory"):
        check_model_path(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="is a file"):
        check_model_path(str(tmp_path / "f"))
