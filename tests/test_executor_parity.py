"""The inline executor and a 2-worker pool give outcome-identical episodes with the shipped checkpoint.

Both pin torch/BLAS to one thread (``executors.pinned_threads``); before they did not, and 1 of 32
episodes differed (a multi-threaded reduction rounds differently).
"""

import torch
from test_eval_fakes import ThreadProbe, assert_same_episodes, episodes_by_key, fake_suite_args

from realgap.cli import main


def test_inline_and_two_workers_are_outcome_identical_with_the_shipped_policy(tmp_path):
    threads = torch.get_num_threads()
    outs = {}
    for name, extra in {"inline": ["executor=inline"], "pool": ["workers=2"]}.items():
        out = tmp_path / name
        args = ["suite", f"out={out}", *extra, "conditions=[nominal,target_lab]", "suite.seeds.n=8",
                "suite.batch_envs=8", "suite.record_frames=none", "suite.env.kwargs.max_episode_steps=30",
                "report.enabled=false"]
        assert main(args) == 0
        outs[name] = episodes_by_key(out)
    assert len(outs["inline"]) == 16
    assert_same_episodes(outs["inline"], outs["pool"])  # infos and every stored array, bit for bit
    assert {info["success"] for info, _ in outs["inline"].values()} == {True, False}  # not a trivial match
    assert torch.get_num_threads() == threads  # inline restores the caller's thread setting afterwards


def test_inline_runs_the_policy_on_one_thread_like_a_worker(tmp_path):
    torch.set_num_threads(2)  # what an unpinned process on this 2-core machine uses
    try:
        ThreadProbe.seen.clear()
        assert main(fake_suite_args(tmp_path / "o", "executor=inline", "report.enabled=false",
                                    "suite.policy.spec=test_eval_fakes:make_thread_probe", n=4)) == 0
        assert ThreadProbe.seen and set(ThreadProbe.seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads_before_tests)


threads_before_tests = torch.get_num_threads()
