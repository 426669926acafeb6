"""The REST layer (API.md §1-§3): thin Starlette endpoints over the registry stores."""
