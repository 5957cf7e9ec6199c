"""The request path: call context, servicer, pipeline (admission, routing, accounting, audit)."""
