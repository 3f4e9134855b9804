"""tokenomy.catalog"""
