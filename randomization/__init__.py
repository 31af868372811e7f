"""realgap.randomization"""
