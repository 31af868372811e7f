"""realgap.data"""
