"""realgap: sim-to-real evaluation for robot manipulation policies.

Subpackages (installed from the repo's top-level folders):
realgap.envs, realgap.randomization, realgap.data, realgap.policies, realgap.evaluation.
"""

__version__ = "0.1.0"
