"""The one output rule (realgap.outputs): never touch an existing output without --resume/--overwrite."""

from __future__ import annotations

import pytest

from realgap.errors import RealgapError
from realgap.outputs import claim_output, prepare_dir


def test_modes_and_refusals(tmp_path):
    out = tmp_path / "run"
    assert claim_output(out, resume=False, overwrite=False) == "new"
    with pytest.raises(RealgapError, match="nothing to resume"):
        claim_output(out, resume=True, overwrite=False)
    out.mkdir()
    assert claim_output(out, resume=False, overwrite=False) == "new"  # an empty folder holds nothing to lose
    (out / "result.json").write_text("{}")
    with pytest.raises(RealgapError, match=r"^out: .* exists; pass --resume"):
        claim_output(out, resume=False, overwrite=False)
    with pytest.raises(RealgapError, match="exclude each other"):
        claim_output(out, resume=True, overwrite=True)
    with pytest.raises(RealgapError, match="marker.json: missing"):
        claim_output(out, resume=True, overwrite=False, marker="marker.json")
    assert claim_output(out, resume=True, overwrite=False, marker="result.json") == "resume"
    assert claim_output(out, resume=False, overwrite=True) == "overwrite"
    assert (out / "result.json").exists()  # claiming changes nothing


def test_prepare_dir_empties_only_on_overwrite(tmp_path):
    out = tmp_path / "run"
    assert prepare_dir(out, resume=False, overwrite=False, field="out_dir") == "new" and out.is_dir()
    (out / "a").write_text("x")
    assert prepare_dir(out, resume=True, overwrite=False) == "resume" and (out / "a").exists()
    assert prepare_dir(out, resume=False, overwrite=True) == "overwrite" and not any(out.iterdir())


def test_unwritable_parent_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RealgapError, match="^out_dir: .* is a file"):
        claim_output(blocker / "run", resume=False, overwrite=False, field="out_dir")
