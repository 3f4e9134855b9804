"""tokenomy.bench"""
