"""tokenomy.economics"""
