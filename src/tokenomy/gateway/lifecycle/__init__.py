"""One request's lifecycle: admit -> dispatch -> settle (see gateway/proxy.py for the order)."""
