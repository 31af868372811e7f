"""Chunk-disagreement uncertainty: per-replan scores, conformal calibration, detector metrics.

``realgap uncertainty out=<suite>`` (calibrate + score + metrics) and ``realgap score`` (offline
re-sampling of logged episodes) write their results under ``<out>/uncertainty/``. The review queue
(``realgap review``) reads exactly these two files.

Output files (schema "realgap.uncertainty/1")
=============================================

``<out>/uncertainty/calibration.json``: the conformal threshold and what it is valid for::

    {
      "schema": "realgap.uncertainty/1",
      "score": "total_var",             # primary per-replan score (see SCORES below)
      "aggregate": "max",               # per-episode aggregate the threshold applies to
      "threshold": 0.0123,              # flag an episode when its aggregate score > threshold
                                        # (online: first step whose causal running max > threshold)
      "alpha": 0.1,                     # target false-alarm rate on successes
      "n": 57,                          # calibration successes used
      "rank": 52,                       # k = ceil((n+1)(1-alpha)); threshold = k-th smallest score
      "k_samples": 8,                   # chunks sampled per replan (K)
      "calibration_seeds": [2000000, ...],    # seeds of the calibration successes used
      "calibration_condition": "nominal",
      "thresholds": {"total_var": 0.0123, "prefix_var": ..., ...},   # same rule, every score
      "policy": "checkpoints/state_policy",   # spec as given
      "policy_digest": "sha256:..."           # of the checkpoint's policy.json + weights
    }

``<out>/uncertainty/episodes.json``: one entry per scored episode::

    {
      "schema": "realgap.uncertainty/1",
      "store": "/abs/path/to/episodes.zarr",  # the episode store the indices refer to
      "score": "total_var", "threshold": 0.0123, "alpha": 0.1, "k_samples": 8,
      "n_obs_steps": 2,                       # chunk row j predicts env step (replan step - n_obs_steps + 1 + j)
      "n_action_steps": 8,                    # executed prefix length (sample 0 is executed)
      "episodes": [
        {
          "episode": 12,                      # index in the store (ReplayBuffer.episode(12))
          "condition": "target_lab", "seed": 100003,
          "success": false,                   # null when the log has no outcome
          "termination_reason": "timeout",    # "" when unknown
          "length": 120,                      # env steps
          "failure_step": 120,                # env step of the failure event (the episode end when the
                                              # env gave no event); null for successes
          "score": 0.031,                     # per-episode aggregate (max) of the primary score
          "scores": {"total_var": 0.031, "prefix_var": ..., "gripper_var": ..., "mode_var": ...,
                     "stac": ..., "novelty": ..., "denoise_loss": ..., "random": ...},  # max of each
          "trace": [{"step": 0, "score": 0.004}, {"step": 8, "score": 0.011}, ...],  # primary, per replan
          "alarm_step": 48,                   # first replan step whose running max > threshold; null if none
          "flagged": true                     # alarm_step is not null (== score > threshold)
        }, ...
      ]
    }

The K sampled chunks themselves are in the store, not in JSON: ``data/chunks`` (see below).

Chunks in the episode store
===========================
``data/chunks``: float32, shape (rows, K, horizon, action_dim), one row per step row of the store
(row t of an episode = the step whose observation o_t the policy acted on). Rows where the policy
replanned hold the K chunks sampled there, in raw action units (like ``data/action``); all other rows
are NaN. Sample 0 is the executed one: the env executed ``chunks[t, 0, n_obs_steps-1 : n_obs_steps-1+n_action_steps]``.
"""
