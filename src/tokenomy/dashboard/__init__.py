"""tokenomy.dashboard"""
