"""Hydra config tree; groups mirror the packages (env/, randomization/, data/, policy/, suite/)."""
