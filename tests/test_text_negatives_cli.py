"""`mmgeolm-data text-negatives` end to end, on both input formats, and the Python API."""
import json

import pytest

from data_recipes.cli import main
from data_recipes.text_negatives.generate import generate_text_negatives, read_items
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import FormatError

CAPTIONS = [
    "In the figure, AB is the diameter of circle O, and point C lies on the circle. ∠BAC = 30°, and BC = 4 cm.",
    "ABCD is a square with side 8; E is the midpoint of CD and AE intersects BD at F.",
    "An equilateral triangle ABC is inscribed in circle O, and D is a point on arc BC.",
    "In △ABC, ∠A = 50°, ∠B = 60°, ∠C = 70°, and AD:DB = 1:2.",
    "ABCD is a rectangle with side 6; E is the midpoint of AB and CE intersects BD at G.",
    "Circle O has radius 5 and chord AB = 8; M is the midpoint of AB.",
    "Hello there.",
]


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_api_returns_both_kinds_in_input_order_and_reports_shortfalls():
    items = [{"id": f"s{i}", "caption": c} for i, c in enumerate(CAPTIONS)]
    lines, reports = generate_text_negatives(items, 3, seed=5)
    assert [line["id"] for line in lines] == [it["id"] for it in items]
    for line, item in zip(lines, items):
        assert line["caption"] == item["caption"]
        captions = [n["caption"] for n in line["negatives"]]
        assert len(captions) == len(set(captions)) and item["caption"] not in captions
        for negative in line["negatives"]:
            assert negative["kind"] in ("rule", "retrieval")
            assert (negative["rules"] == []) == (negative["kind"] == "retrieval")
    hello = next(line for line in lines if line["id"] == "s6")
    assert hello["negatives"] == []
    assert {(r["id"], r["kind"]) for r in reports} >= {("s6", "rule"), ("s6", "retrieval")}
    assert generate_text_negatives(items, 3, seed=5) == (lines, reports)


def test_api_uses_facts_and_validates_items():
    items = [{"id": "a", "caption": "ABCD is a square with side 4.", "facts": ["square(ABCD)", "side=4"]},
             {"id": "b", "caption": "ABCD is a square.", "facts": ["square(ABCD)"]},
             {"id": "c", "caption": "ABCD is a square with side 5.", "facts": ["square(ABCD)", "side=5"]}]
    lines, _ = generate_text_negatives(items, 2, kinds=["retrieval"])
    assert [n["caption"] for n in lines[0]["negatives"]] == [items[2]["caption"]]  # b is true of a
    with pytest.raises(InputError, match="item 1: key 'caption'"):
        generate_text_negatives([{"id": "a", "caption": "x"}, {"id": "b"}], 1)
    with pytest.raises(ValueError, match="unknown negative kind"):
        generate_text_negatives(items, 1, kinds=["image"])


def test_cli_on_jsonl(tmp_path, capsys):
    src = _jsonl(tmp_path / "captions.jsonl", [{"id": f"s{i}", "caption": c} for i, c in enumerate(CAPTIONS)])
    out = tmp_path / "out" / "neg.jsonl"
    assert main(["text-negatives", "--in", str(src), "--num", "2", "--kinds", "rule,retrieval", "--out", str(out),
                 "--seed", "3"]) == 0
    lines = _read_jsonl(out)
    assert [line["id"] for line in lines] == [f"s{i}" for i in range(len(CAPTIONS))]
    kinds = [n["kind"] for n in lines[0]["negatives"]]
    assert kinds.count("rule") == 2 and kinds.count("retrieval") == 2
    assert all(n["rules"] for n in lines[0]["negatives"] if n["kind"] == "rule")
    report = json.loads((tmp_path / "out" / "neg.report.json").read_text())
    assert {"id": "s6", "kind": "rule", "reason": "no caption rule applies to this caption"} in report["reports"]
    assert "fewer than 2 rule negatives" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["neg.jsonl", "neg.report.json"]  # no temporaries
    first = out.read_bytes()
    assert main(["text-negatives", "--in", str(src), "--num", "2", "--out", str(out), "--seed", "3"]) == 0
    assert out.read_bytes() == first


@pytest.mark.parametrize("form", ["turn_objects", "bare_strings", "single_turn"])
def test_cli_on_reference_json(tmp_path, form):
    records = []
    for i, caption in enumerate(CAPTIONS[:4]):
        turns = {
            "turn_objects": [{"from": "human", "value": "<image>\nDescribe the figure."}, {"from": "gpt", "value": caption}],
            "bare_strings": ["<image>\nDescribe the figure.", caption],
            "single_turn": {"from": "gpt", "value": caption},
        }[form]
        records.append({"positive_image_path": f"images/{i}.png", "negative_captions": [], "conversations": turns})
    src = tmp_path / "text_negatives.json"
    src.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "neg.jsonl"
    assert main(["text-negatives", "--in", str(src), "--num", "1", "--kinds", "rule", "--out", str(out)]) == 0
    lines = _read_jsonl(out)
    assert [line["id"] for line in lines] == [f"images/{i}.png" for i in range(4)]
    assert [line["caption"] for line in lines] == CAPTIONS[:4]
    assert all(len(line["negatives"]) == 1 and line["negatives"][0]["kind"] == "rule" for line in lines)


@pytest.mark.parametrize("content,message", [
    ('{"id": "a", "caption": "AB is a chord."}\n{"id": "b"}\n', "line 2: expected key 'caption'"),
    ('{"id": "a", "caption": "AB is a chord."}\n{"id": "b", "caption": 7}\n', "line 2: key 'caption': expected a string"),
    ('{"id": "a", "caption": "AB"}\nnot json\n', "line 2: not valid JSON"),
    ('{"id": "a", "caption": "AB", "facts": "square"}\n', "line 1: key 'facts': expected a list of strings"),
    ('{"id": "a", "caption": "AB"}\n{"id": "a", "caption": "CD"}\n', "record 1: key 'id': 'a' repeats record 0"),
    ('[{"positive_image_path": "x.png", "conversations": [{"from": "human", "value": "hi"}]}]',
     "record 0: key 'conversations': no answer turn"),
    ('[{"positive_image_path": "x.png", "conversations": [3]}]', "record 0: key 'conversations[0]'"),
    ('[{"positive_image_path": 5, "conversations": ["q", "a"]}]', "record 0: key 'positive_image_path'"),
])
def test_bad_records_name_file_record_and_key(tmp_path, capsys, content, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(content, encoding="utf-8")
    with pytest.raises(FormatError, match="bad.jsonl: " + message.replace("[", r"\[").replace("]", r"\]")):
        read_items(src)
    assert main(["text-negatives", "--in", str(src), "--num", "1", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert message.split(":")[0] in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_pretty_printed_single_record_and_jsonl_ids_from_index(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"positive_image_path": "a.png", "conversations": ["q", CAPTIONS[1]]}, indent=2))
    assert read_items(one) == [{"id": "a.png", "caption": CAPTIONS[1]}]
    lines = _jsonl(tmp_path / "x.jsonl", [{"caption": CAPTIONS[0]}, {"caption": CAPTIONS[1], "facts": ["f"]}])
    assert read_items(lines) == [{"id": "0", "caption": CAPTIONS[0]}, {"id": "1", "caption": CAPTIONS[1], "facts": ["f"]}]
