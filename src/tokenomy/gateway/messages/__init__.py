"""POST /v1/messages: the Anthropic Messages API, inbound, served by the chat lifecycle.

The request is translated onto an OpenAI chat request (request.py) at admission and then runs
the one pipeline every chat request runs (admit -> dispatch -> settle: auth incl. x-api-key,
budgets, rate limits, plan caps, routing, fallbacks, ONE metered event), whatever the provider
of the deployment behind the alias. The answer is translated back at the edge: a unary body or
error (response.py), a stream event by event as the lifecycle writes it (sse.py). An attempt on
a `provider: anthropic` deployment is relayed natively (the client's body upstream, Anthropic's
own answer / events back, metered the same way: handler.Inbound, docs/providers.md).
Errors are Anthropic-shaped ({"type": "error", "error": {"type", "message"}}); a spent budget
or a blocking plan cap is a 402 billing_error with `x-should-retry: false` (the anthropic SDK
does not retry it), a rate limit a 429 rate_limit_error with Retry-After.
"""

from tokenomy.gateway.messages.handler import Inbound, messages

__all__ = ["Inbound", "messages"]
