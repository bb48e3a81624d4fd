"""The optional LLM judge against a real OpenAI-compatible HTTP server on loopback: only abstentions, cached."""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mmgeolm.bench.cli import main as bench_main
from mmgeolm.bench.judge import Judge
from mmgeolm_core.errors import JobError

QUESTIONS = [("Find the inscribed angle on an 80° arc.", ["20°", "30°", "40°", "80°"], "C"),
             ("Find the diagonal of a 6 by 8 rectangle.", ["7", "10", "12", "14"], "B"),
             ("Find angle E of isosceles triangle DEF with apex 40°.", ["40°", "50°", "60°", "70°"], "D")]
RESPONSES = ["Answer: C", "I would go with the second one, ten.", "Hmm, hard to say."]


class _Handler(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        prompt = body["messages"][-1]["content"]
        reply = "B" if "ten" in prompt else "NONE"  # a judge that reads "ten" as option B
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _geoqa(root: Path) -> tuple[Path, Path]:
    q, a, p = root / "test_questions.jsonl", root / "test_answers.jsonl", root / "predictions.jsonl"
    q.write_text("".join(json.dumps({"question_id": i, "image": f"{i}.png", "text": "Question:" + t + "\nChoices:\n"
                                     + "\n".join(f"{c}:{x}" for c, x in zip("ABCD", ch))}) + "\n"
                         for i, (t, ch, _) in enumerate(QUESTIONS)))
    a.write_text("".join(json.dumps({"question_id": i, "text": g}) + "\n" for i, (_, _, g) in enumerate(QUESTIONS)))
    p.write_text("".join(json.dumps({"id": str(i), "response": r}) + "\n" for i, r in enumerate(RESPONSES)))
    return q, p


def test_judge_decides_only_abstentions_and_a_rescore_is_served_from_the_cache(tmp_path: Path, server: str) -> None:
    questions, preds = _geoqa(tmp_path)
    out = tmp_path / "scored"
    args = ["score", "geoqa", "--questions", str(questions), "--predictions", str(preds), "--out", str(out),
            "--judge-url", server, "--judge-model", "local-judge", "-q"]
    assert bench_main(args) == 0
    assert len(_Handler.requests) == 2  # items 1 and 2; item 0 was read by the rules
    first = _Handler.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["model"] == "local-judge" and first["temperature"] == 0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["method"], r["extracted"], r["correct"]) for r in results] == [
        ("rule", "C", True), ("judge", "B", True), ("none", None, False)]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["num_judged"] == 1 and scores["num_unparsed"] == 1 and scores["judge"]["requests"] == 2
    assert bench_main(args) == 0  # re-score: every judge answer comes from judge_cache.jsonl
    assert len(_Handler.requests) == 2
    again = json.loads((out / "scores.json").read_text())
    assert again["judge"]["cache_hits"] == 2 and again["accuracy"] == scores["accuracy"]
    without = tmp_path / "no-judge"
    assert bench_main(args[:8] + ["--out", str(without), "-q"]) == 0
    assert json.loads((without / "scores.json").read_text())["num_unparsed"] == 2  # no judge by default


def test_an_unreachable_judge_is_a_job_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(JobError, match="judge at http://127.0.0.1:9/v1/chat/completions"):
        Judge("http://127.0.0.1:9/v1", "m", timeout=2).ask("hi")
    questions, preds = _geoqa(tmp_path)
    code = bench_main(["score", "geoqa", "--questions", str(questions), "--predictions", str(preds), "--out",
                       str(tmp_path / "o"), "--judge-url", "ftp://x", "--judge-model", "m"])
    assert code == 2 and re.search(r"expected an http\(s\) URL", capsys.readouterr().err)
