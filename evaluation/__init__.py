"""realgap.evaluation"""
