"""tokenomy.gateway"""
