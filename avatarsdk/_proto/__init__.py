"""Generated protobuf modules of the service's wire schema (see scripts/generate_proto.py)."""
