"""tokenomy.metering"""
