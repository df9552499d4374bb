"""The HTTP side: every URL from the endpoint table, views, validation, errors, keys, headers, caches."""
