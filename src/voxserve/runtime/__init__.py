"""Where models come from (catalog, store) and how loaded ones are shared (pool)."""
