"""tokenomy.routing"""
