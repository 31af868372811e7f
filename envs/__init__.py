"""realgap.envs"""
