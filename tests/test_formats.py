"""The format owners: data_recipes.formats.{dataset,reference}, and every reader going through them."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_recipes import cli
from data_recipes.external.batch import items_from_reference_json
from data_recipes.formats.reference import caption_from_conversations, read_reference
from data_recipes.text_negatives.generate import read_items
from mmclip_plugin.data import read_samples as mmclip_read_samples
from mmgeolm_core.io import FormatError, read_records

FIRST, LAST = "Triangle ABC with AB = 4.", "It has a right angle at B."


@pytest.mark.parametrize("value, expected", [
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": " Cap. "}], "Cap."),
    (["q", "Cap."], "Cap."),
    ({"from": "gpt", "value": "Cap."}, "Cap."),
    ([["human", "q"], ["gpt", "Cap."]], "Cap."),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "Cap."}], "Cap."),
    # multi-turn: the first answer, as the reference's training code reads conversations[1]
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": FIRST},
      {"from": "human", "value": "more?"}, {"from": "gpt", "value": LAST}], FIRST),
])
def test_caption_is_the_first_answer_turn(value, expected):
    assert caption_from_conversations(value, "f.json", "record 0") == expected


@pytest.mark.parametrize("value, key", [
    (None, "conversations"), ([], "conversations"), ("oops", "conversations"), ([{"from": "x"}], "conversations[0]"),
    (["only a question"], "conversations"), ([{"from": "gpt", "value": "  "}], "conversations[0]"),
])
def test_caption_errors_name_file_record_and_key(value, key):
    with pytest.raises(FormatError) as info:
        caption_from_conversations(value, "f.json", "record 3")
    assert str(info.value).startswith(f"f.json: record 3: key '{key}': ")


def _png(path: Path, shift: int) -> str:
    array = np.full((16, 16, 3), 255, np.uint8)
    array[4 + shift, 2:14] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path.name


def test_every_reader_takes_the_same_caption_from_a_multi_turn_record(tmp_path):
    # issue 12: mmclip-train took the first gpt answer, import / text-negatives / perturb-batch the last,
    # so caption negatives negated another caption than the one trained on.
    _png(tmp_path / "p.png", 0), _png(tmp_path / "n.png", 3)
    turns = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": FIRST},
             {"from": "human", "value": "Anything else?"}, {"from": "gpt", "value": LAST}]
    image_json = tmp_path / "image_neg.json"
    image_json.write_text(json.dumps([{"positive_image_path": "p.png", "negative_image_path": ["n.png"],
                                       "conversations": turns, "code": "print(1)"}]))
    (samples, bad) = mmclip_read_samples(image_json)
    assert not bad and [s.caption for s in samples] == [FIRST]
    assert [item["caption"] for item in read_items(image_json)] == [FIRST]
    assert [item.caption for item in items_from_reference_json(image_json)] == [FIRST]
    out = tmp_path / "imported"
    assert cli.main(["import", "--reference-image-negatives", str(image_json), "--out", str(out)]) == 0
    (line,) = (out / "samples.jsonl").read_text().splitlines()
    assert json.loads(line)["caption"] == FIRST


def test_reference_reader_skips_and_reports_bad_records(tmp_path):
    path = tmp_path / "ref.jsonl"
    good = {"positive_image_path": "a.png", "negative_captions": ["x", "a.", "x"], "conversations": ["q", "a."]}
    path.write_text("\n".join(json.dumps(r) for r in [
        good, {"positive_image_path": "a.png", "conversations": ["q", "a."]}, "text", good | {"negative_captions": [3]},
    ]))
    records, problems = read_reference(path, "text")
    # the negative equal to the positive and the repeated one are dropped
    assert [(r.where, r.caption, r.negative_captions) for r in records] == [("line 1", "a.", ("x",))]
    assert [(p.where, p.key) for p in problems] == [("line 2", None), ("line 3", None), ("line 4", "negative_captions")]
    assert "expected key 'negative_captions'" in str(problems[0])


@pytest.mark.parametrize("text, where", [('[{"a": 1}, {"b": 2}]', ["record 0", "record 1"]),
                                         ('{"a": 1}\n{"b": 2}\n', ["line 1", "line 2"]),
                                         ('{"a": 1}', ["line 1"]),
                                         ('{\n "a": 1\n}\n', ["record 0"])])
def test_json_or_json_lines_records_say_where_they_are(tmp_path, text, where):
    path = tmp_path / "r.json"
    path.write_text(text)
    assert [w for w, _ in read_records(path)] == where


@pytest.mark.parametrize("data, message", [(b"", "empty file"), (b"[1, 2", "line 1: not valid JSON"),
                                           (b'{"a": 1}\n{"b": NaN}\n', "line 2: not valid JSON"),
                                           ('{"a": "é"}'.encode("latin-1"), "line 1: not UTF-8")])
def test_unreadable_record_files_name_file_and_line(tmp_path, data, message):
    path = tmp_path / "r.json"
    path.write_bytes(data)
    with pytest.raises(FormatError, match=f"r.json: {message}"):
        read_records(path)
