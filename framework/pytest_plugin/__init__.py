"""The project's pytest plugins: `sandbox` (sandbox tier) and `vm`, `image` (VM tier)."""
