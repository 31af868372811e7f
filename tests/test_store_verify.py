"""A damaged episode store is found: `realgap verify`, `report` and `suite --resume` refuse it with one line."""

import hashlib

import pytest
from test_eval_fakes import fake_suite_args

from realgap.cli import main


def tree_digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def suite_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "o"
    assert main(fake_suite_args(out, "executor=inline", "report.enabled=false", n=4)) == 0
    return out


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_action_chunk_is_refused_everywhere(suite_out, tmp_path, capsys, damage):
    import shutil

    out = tmp_path / "o"
    shutil.copytree(suite_out, out)
    capsys.readouterr()
    assert main(["verify", f"out={out}", "progress=false"]) == 0
    assert "ok (12 episodes" in capsys.readouterr().out
    chunk = out / "episodes.zarr" / "data" / "action" / "c" / "0" / "0"
    if damage == "truncate":
        chunk.write_bytes(chunk.read_bytes()[:-7])
    else:
        chunk.unlink()
    before = tree_digest(out)
    commands = {
        "verify": ["verify", f"out={out}", "progress=false"],
        "report": ["report", f"out={out}"],
        "resume": fake_suite_args(out, "executor=inline", "--resume", n=4),
    }
    for name, args in commands.items():
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2, name
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert "data/action chunk c/0/0" in err and "first affected episode 0" in err, (name, err)
        assert ("missing" in err) == (damage == "delete"), err
    assert tree_digest(out) == before  # nothing written, no report folder
    assert not (out / "report").exists()


def test_verify_of_a_folder_without_store_is_a_one_line_error(tmp_path, capsys):
    assert main(["verify", f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "holds no episode store" in err and len(err.strip().splitlines()) == 1
