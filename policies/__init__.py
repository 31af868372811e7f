"""realgap.policies"""
