"""tokenomy.fleet"""
