"""Review queue without a browser: queue order, path confinement, verdict validation, atomic and
locked writes, precision with a Wilson CI, CSV export, and that the episode store is never written."""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest
from test_review_fakes import frame_colour, hammer_verdicts, make_suite, serving

from realgap.cli import main
from realgap.errors import RealgapError
from realgap.evaluation import review, stats


def _get(url: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("GET", path, skip_host=bool(headers and "Host" in headers), skip_accept_encoding=True)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def _post(url: str, body: bytes | str, ctype: str = "application/json") -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/api/verdict", body=body if isinstance(body, bytes) else body.encode(),
                 headers={"Content-Type": ctype})
    r = conn.getresponse()
    data = json.loads(r.read() or b"{}")
    conn.close()
    return r.status, data


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def suite(tmp_path) -> Path:
    return make_suite(tmp_path / "suite", n=12, flagged=(1, 3, 4, 8))


def test_queue_flagged_by_score_then_seeded_sample_of_unflagged(suite):
    app = review.ReviewApp(suite, {"n_unflagged": 3, "seed": 5})
    kinds = [q["kind"] for q in app.queue]
    assert kinds == ["flagged"] * 4 + ["sample"] * 3
    assert [q["episode"] for q in app.queue[:4]] == [8, 4, 3, 1]  # score 0.1 * episode, highest first
    sample = [q["episode"] for q in app.queue[4:]]
    assert len(set(sample)) == 3 and not set(sample) & {1, 3, 4, 8}
    # the same seed gives the same sample; across seeds the sample changes
    assert [q["episode"] for q in review.ReviewApp(suite, {"n_unflagged": 3, "seed": 5}).queue[4:]] == sample
    others = {tuple(q["episode"] for q in review.build_queue(app.suite.scored, 3, s)[4:]) for s in range(8)}
    assert len(others) > 1
    # asking for more than exist queues every unflagged episode once
    everything = review.build_queue(app.suite.scored, 100, 0)
    assert sorted(q["episode"] for q in everything[4:]) == [0, 2, 5, 6, 7, 9, 10, 11]


def test_files_only_from_inside_the_suite_folder(suite, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    (suite / "report").mkdir()
    (suite / "report" / "note.txt").write_text("inside")
    os.symlink(secret, suite / "report" / "link.txt")  # a link inside that points outside
    with serving(suite) as (_, url):
        status, body = _get(url, "/files/report/note.txt")
        assert (status, body) == (200, b"inside")
        assert _get(url, "/files/suite.json")[0] == 200
        attacks = [
            "/files/../secret.txt", "/files/report/../../secret.txt", "/files/%2e%2e/secret.txt",
            "/files/%2E%2E%2Fsecret.txt", "/files/report/..%2f..%2fsecret.txt", "/files/%252e%252e/secret.txt",
            f"/files/{secret}", f"/files//{secret}", "/files/" + quote(str(secret), safe=""),
            "/files/%2Fetc%2Fpasswd", "/files//etc/passwd", "/files/..\\secret.txt", "/files/report/link.txt",
            "/files/report/note.txt%00", "/files/", "/files/report", "/static/../suite.json",
            "/static/..%2f..%2freview.py",
        ]
        for path in attacks:
            status, body = _get(url, path)
            assert status in (403, 404), path
            assert b"TOP SECRET" not in body and b"root:" not in body, path


def test_requests_for_another_host_name_are_refused(suite):
    with serving(suite) as (_, url):
        assert _get(url, "/api/queue")[0] == 200
        assert _get(url, "/api/queue", {"Host": "localhost:1"})[0] == 200
        status, body = _get(url, "/api/queue", {"Host": "evil.example:80"})  # DNS rebinding
        assert status == 403 and b"episode" not in body


def test_every_verdict_is_validated(suite):
    with serving(suite, n_unflagged=2, max_note_chars=50) as (app, url):
        verdict_file = app.verdicts.path
        in_store_not_queued = next(i for i in range(12) if i not in app.by_episode)
        bad = [
            {"episode": 999, "verdict": "benign"},
            {"episode": in_store_not_queued, "verdict": "benign"},
            {"episode": "3", "verdict": "benign"},
            {"episode": True, "verdict": "benign"},
            {"episode": 3, "verdict": "maybe"},
            {"episode": 3, "verdict": None},
            {"episode": 3, "verdict": "benign", "note": "x" * 51},
            {"episode": 3, "verdict": "benign", "note": 7},
            {"episode": 3, "verdict": "benign", "note": "", "admin": True},
            [3, "benign"],
        ]
        for payload in bad:
            status, body = _post(url, json.dumps(payload))
            assert status == 400 and body["error"], payload
        assert _post(url, "{not json")[0] == 400
        assert _post(url, b"\xff\xfe")[0] == 400
        assert _post(url, json.dumps({"episode": 3, "verdict": "benign"}), "text/plain")[0] == 415
        assert _post(url, json.dumps({"episode": 3, "verdict": "benign", "note": "y" * 70_000}))[0] == 413
        assert not verdict_file.exists()  # nothing bad was written
        status, body = _post(url, json.dumps({"episode": 3, "verdict": "real_failure", "note": "x" * 50}))
        assert status == 200 and body["saved"]["verdict"] == "real_failure"
        saved = json.loads(verdict_file.read_text())["verdicts"]
        assert saved["3"]["note"] == "x" * 50 and saved["3"]["seed"] == 103


def test_verdicts_survive_a_restart_and_precision_has_a_wilson_ci(suite):
    verdicts = {8: "real_failure", 4: "benign", 3: "real_failure", 1: "unsure"}
    with serving(suite, n_unflagged=4) as (app, url):
        sample = [q["episode"] for q in app.queue if q["kind"] == "sample"]
        for ep, v in verdicts.items():
            assert _post(url, json.dumps({"episode": ep, "verdict": v, "note": f"n{ep}"}))[0] == 200
        assert _post(url, json.dumps({"episode": sample[0], "verdict": "real_failure"}))[0] == 200
        assert _post(url, json.dumps({"episode": sample[1], "verdict": "benign"}))[0] == 200
        assert _post(url, json.dumps({"episode": 4, "verdict": "real_failure", "note": "changed my mind"}))[0] == 200
    # a new server on the same folder (a restart) sees every verdict, the latest one per episode
    with serving(suite, n_unflagged=4) as (app, url):
        state = json.loads(_get(url, "/api/queue")[1])
        got = {i["episode"]: i["verdict"] for i in state["items"] if i["verdict"]}
        assert got == {8: "real_failure", 4: "real_failure", 3: "real_failure", 1: "unsure",
                       sample[0]: "real_failure", sample[1]: "benign"}
        detail = json.loads(_get(url, "/api/episode/4")[1])
        assert detail["verdict"]["note"] == "changed my mind"
        s = state["summary"]
        assert (s["flagged"]["real_failure"], s["flagged"]["benign"], s["flagged"]["unsure"]) == (3, 0, 1)
        assert s["precision"] == stats.wilson(3, 3).as_dict()
        assert s["unflagged_failure_rate"] == stats.wilson(1, 2).as_dict()
        assert s["sample"]["reviewed"] == 2 and s["sample"]["in_queue"] == 4


def test_episode_detail_frames_and_chunks_come_from_the_store(suite):
    with serving(suite, n_unflagged=12) as (app, url):
        detail = json.loads(_get(url, "/api/episode/3")[1])
        assert detail["instruction"].endswith("#3") and detail["dr_params"]["physics"]["friction"] == 0.53
        assert detail["n_frames"] == 10 and detail["cameras"] == ["front"] and detail["alarm_step"] == 6
        assert detail["trace"][0] == [0, pytest.approx(0.0333)]
        status, png = _get(url, "/api/episode/3/frame/4.png")
        assert status == 200
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(img, frame_colour(3, 4))
        assert _get(url, "/api/episode/3/frame/10.png")[0] == 404  # past the end
        success = json.loads(_get(url, "/api/episode/2")[1])  # successes keep no frames in this suite
        assert success["n_frames"] == 0 and _get(url, "/api/episode/2/frame/0.png")[0] == 404
        chunks = json.loads(_get(url, "/api/episode/3/chunks")[1])
        assert chunks["available"] and [r["step"] for r in chunks["replans"]] == [0, 3, 6]
        stored = app.suite.store.episode(3, ["chunks"])["chunks"]
        np.testing.assert_allclose(chunks["replans"][1]["samples"], stored[3], atol=1e-5)
        assert _get(url, "/api/episode/999")[0] == 404 and _get(url, "/api/episode/x/chunks")[0] == 404


def test_a_store_without_chunks_or_frames_still_reviews(tmp_path):
    out = make_suite(tmp_path / "bare", n=4, flagged=(1,), chunks=False, frames=False)
    with serving(out) as (_, url):
        detail = json.loads(_get(url, "/api/episode/1")[1])
        assert detail["n_frames"] == 0 and not detail["has_chunks"] and detail["trace"]
        assert json.loads(_get(url, "/api/episode/1/chunks")[1]) == {"available": False, "replans": []}
        assert _get(url, "/")[0] == 200 and b"review.js" in _get(url, "/")[1]


def test_writes_are_atomic_and_locked(suite, monkeypatch):
    app = review.ReviewApp(suite, {"n_unflagged": 8})
    episodes = sorted(app.by_episode)
    assert len(episodes) == 12
    # two servers' stores and many threads on one file: no lost update, always valid JSON
    stores = [app.verdicts, review.VerdictStore(app.verdicts.path, app.by_episode)]
    errors = []

    def hammer(k: int):
        try:
            for rep in range(15):
                ep = episodes[(k * 3 + rep) % len(episodes)]
                stores[k % 2].record({"episode": ep, "verdict": review.VERDICTS[rep % 3], "note": f"t{k} r{rep}"})
                json.loads(app.verdicts.path.read_text())  # a reader never sees a partial file
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert set(app.verdicts.load()) == {episodes[(k * 3 + r) % 12] for k in range(4) for r in range(15)}

    # another process writes other episodes at the same time: the file lock loses none of either's
    app.verdicts.path.unlink()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]); from test_review_fakes import "
         "hammer_verdicts as h; go = lambda: (print('ready', flush=True), sys.stdin.readline()); "
         "sys.exit(min(h(sys.argv[1], 1, 15, go), 100))", str(suite), str(Path(__file__).parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"

    def go():
        child.stdin.write("go\n")
        child.stdin.flush()

    assert hammer_verdicts(suite, 0, 15, go) == 0
    assert child.wait(60) == 0, "the other process lost verdicts"
    final = app.verdicts.load()
    assert set(final) == set(episodes)
    assert {v["note"] for v in final.values()} == {"writer 0 round 14", "writer 1 round 14"}

    # a crash between writing the temporary file and the rename keeps the old file, leaves no temp file
    before = app.verdicts.path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash")

    monkeypatch.setattr(review.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        app.verdicts.record({"episode": episodes[0], "verdict": "benign", "note": "lost"})
    monkeypatch.undo()
    assert app.verdicts.path.read_bytes() == before
    assert [p.name for p in app.verdicts.path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_review_never_writes_the_episode_store(suite):
    before = _tree_digest(suite / "episodes.zarr")
    with serving(suite, n_unflagged=5) as (app, url):
        for ep in list(app.by_episode)[:5]:
            _get(url, f"/api/episode/{ep}")
            _get(url, f"/api/episode/{ep}/chunks")
            _get(url, f"/api/episode/{ep}/frame/0.png")
            assert _post(url, json.dumps({"episode": ep, "verdict": "benign"}))[0] == 200
    assert _tree_digest(suite / "episodes.zarr") == before


def test_csv_export_from_the_cli_and_the_server(suite, tmp_path, capsys):
    with serving(suite, n_unflagged=3) as (app, url):
        sample = next(q["episode"] for q in app.queue if q["kind"] == "sample")
        _post(url, json.dumps({"episode": 3, "verdict": "real_failure", "note": 'grasp, then "drop"\nline 2'}))
        _post(url, json.dumps({"episode": sample, "verdict": "benign"}))
        status, served = _get(url, "/api/export.csv")
    assert status == 200
    target = tmp_path / "verdicts.csv"
    assert main(["review", f"out={suite}", "review.n_unflagged=3", f"review.export={target}"]) == 0
    assert "flagger precision 1/1" in capsys.readouterr().out
    rows = list(csv.DictReader(target.open(newline="")))
    assert rows == list(csv.DictReader(io.StringIO(served.decode())))
    assert [(r["episode"], r["kind"], r["verdict"]) for r in rows] == [("3", "flagged", "real_failure"),
                                                                       (str(sample), "sample", "benign")]
    assert rows[0]["note"] == 'grasp, then "drop"\nline 2' and rows[0]["seed"] == "103" and rows[0]["flagged"] == "True"
    # an existing export is not overwritten without --overwrite
    assert main(["review", f"out={suite}", f"review.export={target}"]) == 2
    assert "review.export" in capsys.readouterr().err
    assert main(["review", "--overwrite", f"out={suite}", f"review.export={target}"]) == 0


@pytest.mark.parametrize("setup, overrides, field", [
    (lambda out: (out / "uncertainty" / "episodes.json").unlink(), [], "episodes.json"),
    (lambda out: (out / "uncertainty" / "episodes.json").write_text('{"episodes": [{"episode": 99, "flagged": true}]}'),
     [], "episode"),
    (lambda out: (out / "uncertainty" / "episodes.json").write_text("{oops"), [], "episodes.json"),
    (lambda out: (out / "review").mkdir() or (out / "review" / "verdicts.json").write_text("[]"), [], "verdicts.json"),
    (lambda out: None, ["review.port=70000"], "review.port"),
    (lambda out: None, ["review.n_unflagged=-1"], "review.n_unflagged"),
    (lambda out: None, ["+review.colour=red"], "review.colour"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, setup, overrides, field):
    out = make_suite(tmp_path / "s", n=4, flagged=(1,), chunks=False)
    setup(out)
    assert main(["review", f"out={out}", "review.export=" + str(tmp_path / "x.csv"), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err
    assert not (tmp_path / "x.csv").exists()


def test_a_missing_suite_folder_and_a_busy_port_are_one_line_errors(tmp_path):
    with pytest.raises(RealgapError, match="out"):
        review.ReviewApp(tmp_path / "nowhere")
    out = make_suite(tmp_path / "s", n=3, flagged=(1,), chunks=False)
    with serving(out) as (app, url):
        with pytest.raises(RealgapError, match="review.port"):
            review.make_server(app, "127.0.0.1", int(url.rsplit(":", 1)[1]))


def test_an_offline_score_folder_reviews_the_store_it_names(tmp_path):
    """`realgap score` writes <out>/uncertainty/ only; episodes.json's "store" points at the logged store."""
    suite = make_suite(tmp_path / "logged", n=5, flagged=(3,))
    scored_out = tmp_path / "offline_score"
    (suite / "uncertainty").rename(tmp_path / "unc")
    scored_out.mkdir()
    (tmp_path / "unc").rename(scored_out / "uncertainty")
    with serving(scored_out) as (app, url):
        assert app.suite.store.path == (suite / "episodes.zarr").resolve()
        detail = json.loads(_get(url, "/api/episode/3")[1])
        assert detail["n_frames"] == 10
        app.suite.infos[3].pop("frames")  # a robot log has no info.frames: its frames are all real
        app._frames.clear()
        assert json.loads(_get(url, "/api/episode/3")[1])["n_frames"] == 10
        assert _post(url, json.dumps({"episode": 3, "verdict": "benign"}))[0] == 200
    assert (scored_out / "review" / "verdicts.json").exists() and not (suite / "review").exists()
    doc = json.loads((scored_out / "uncertainty" / "episodes.json").read_text())
    doc["store"] = str(tmp_path / "gone.zarr")
    (scored_out / "uncertainty" / "episodes.json").write_text(json.dumps(doc))
    with pytest.raises(RealgapError, match="names no existing store"):
        review.ReviewApp(scored_out)


def test_the_cli_serves_until_interrupted(suite):
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "realgap", "review", f"out={suite}", "review.port=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert "4 flagged + 8 sampled unflagged" in lines[0]
        url = lines[1].split("open ")[1].split("/ ")[0]
        assert url.startswith("http://127.0.0.1:")
        status, body = _get(url, "/api/queue")
        assert status == 200 and json.loads(body)["n_flagged"] == 4
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(60)  # generous: a first run in a fresh venv is slow on a loaded 2-core CI box
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"review did not stop within 60 s of SIGINT; its output: {proc.stdout.read()[-2000:]!r}")
    assert rc == 0 and "every verdict is saved" in proc.stdout.read()
