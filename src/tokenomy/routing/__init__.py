"""tokenomy.routing: quality routing (which model a prompt needs).

`routing.quality` holds the prompt -> model-quality routers, their training and RouteLLM-style
evaluation. Deployment selection (which replica/provider serves a chosen model) lives in the
gateway.
"""
