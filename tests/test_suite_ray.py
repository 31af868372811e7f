"""The Ray executor (local instance, 2 CPUs) gives the same per-episode outcomes as the local pool."""

import pytest
from test_eval_fakes import assert_same_episodes, episodes_by_key, fake_suite_args

from realgap.cli import main

pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_outcomes_identical_to_inline(tmp_path):
    ray_out, ref_out = tmp_path / "ray", tmp_path / "ref"
    assert main(fake_suite_args(ray_out, "executor=ray", "workers=2", "report.enabled=false")) == 0
    assert main(fake_suite_args(ref_out, "executor=inline", "report.enabled=false")) == 0
    ray_eps = episodes_by_key(ray_out)
    assert len(ray_eps) == 36
    assert_same_episodes(ray_eps, episodes_by_key(ref_out))
