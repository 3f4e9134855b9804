"""tokenomy.perf"""
