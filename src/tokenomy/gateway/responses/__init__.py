"""POST /v1/responses: the OpenAI Responses API, served by translation onto chat deployments.

The request is translated onto an OpenAI chat request (request.py) at admission and then runs
the one pipeline every chat request runs (admit -> dispatch -> settle: auth, budgets, rate
limits, plan caps, routing, fallbacks and retries, ONE metered event), whatever the provider of
the deployment behind the alias. The answer is translated back at the edge: a unary `response`
object (response.py), a stream as the Responses API's typed events (sse.py). Errors keep
OpenAI's shape (both APIs share it). The lifecycle's `inbound` hook is the one gateway/messages
(Anthropic's Messages API) uses.
"""

from tokenomy.gateway.responses.handler import ResponsesInbound, responses

__all__ = ["ResponsesInbound", "responses"]
