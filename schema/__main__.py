"""`python -m schema` prints the SDL; `schema.graphql` is this output, checked by a test."""

from schema import build_schema

print(build_schema().as_str())
