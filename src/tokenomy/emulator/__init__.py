"""tokenomy.emulator"""
